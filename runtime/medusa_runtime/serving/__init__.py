"""Serving the engine from Triton's Python backend: the model, its repository and metrics."""
