"""Comparing models and drawing the results: the side-by-side sheet and the loss curves."""
