"""The PyTorch reference runtime: the Medusa inference engine (``engine``), its Triton
Python-backend adapter (``serving``) and offline tuning (``tuning``: head training, tree
calibration, prompt sets, the small test model). Needs the ``runtime`` extra (torch,
transformers); imports ``medusa_common`` and never the builder or the operator."""
