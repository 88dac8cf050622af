"""The PyTorch reference runtime: Medusa tree decoding, head training, tree calibration and a
Triton Python-backend model that serves it. Needs the ``runtime`` extra (torch, transformers)."""
