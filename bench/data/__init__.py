"""What comes in: annotation tables, benchmark sets, the paper's splits and decoded images.

Nothing here scores or analyses; every other part of bench/ reads its inputs through it.
"""
