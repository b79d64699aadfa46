"""Benchmarks run from the command line (`eat bench ...`); figures are ratios within one run."""
