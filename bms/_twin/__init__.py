"""NumPy twins of the compiled kernels (the readable specification and test oracle)."""
