"""Learning machinery apart from the networks: replay, algorithms, the training loop."""
