"""The benchmark: tinyref's training step timed against PyTorch (its twin model) and the oracle."""
