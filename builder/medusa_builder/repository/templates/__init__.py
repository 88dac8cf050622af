"""Jinja2 templates and Python model files of the TensorRT-LLM Triton model repository (see ../trtllm.py)."""
