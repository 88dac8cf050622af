"""Validation of a served Medusa model against a baseline: accuracy and tokens/s gates.

The pieces are small and mostly pure: ``dataset`` reads multiple-choice sets (MMLU CSV release
layout or Hugging Face parquet layout) and throughput prompts, ``prompts`` builds k-shot
prompts, ``answers`` parses the answer letter from generated text, ``client`` talks to Triton,
``accuracy`` and ``throughput`` measure, ``verdict`` applies the thresholds and ``report`` writes
the JSON report, the stdout table and the chart. ``run`` wires them up (the validate step calls ``run.validate``).
"""
