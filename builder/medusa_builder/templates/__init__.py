"""Jinja2 templates of the TensorRT-LLM Triton model repository (see steps/package.py)."""
