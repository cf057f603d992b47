"""The shipped example vehicle matrix and its map (``generate.py`` writes the matrix)."""
