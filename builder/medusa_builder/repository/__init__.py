"""Triton model repositories: what ``medusa-builder package`` writes from a cached engine entry.

``trtllm``: the TensorRT-LLM repository, rendered from ``templates/`` (pbtxt strings quoted by
``medusa_common.triton.pbtxt_string``); ``reference``: the PyTorch reference runtime's repository;
``config``: the check every config.pbtxt passes before upload; ``package``: the step's work.
"""
