"""What the scores mean: statistics, correlations with the human scores, the leaderboard and
the privacy-utility trade-off.

Reads scores (and the store); never runs a flow of its own.
"""
