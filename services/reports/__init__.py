"""Documents generated from measurements (docs/results.md)."""
