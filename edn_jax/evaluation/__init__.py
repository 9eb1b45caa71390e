"""Held-out evaluation, its metrics and baselines, the self score of a transfer, and the results page."""
