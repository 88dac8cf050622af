"""`medusa-builder build-engine`: build a TensorRT-LLM Medusa engine from local folders.

Looks the cache key up in the artifact store first and stops with ``cacheHit: true`` when a
complete entry exists; otherwise prepares the heads, converts, runs ``trtllm-build`` and uploads
the entry (manifest last). ``--dry-run`` prints the exact commands and runs nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from medusa_common.tree import PRESETS

from ..build import trtllm
from ..build.run import BuildOptions, TreeRequest, build_from_folders
from ..build.spec import DTYPES, QUANTIZATIONS, TP_SIZES, EngineSpec
from . import add_model_folders, add_result_argument, add_storage_arguments, storage_settings


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine shape, tree and cache flags shared by build-engine and build."""
    tree = parser.add_mutually_exclusive_group()
    tree.add_argument("--tree-preset", metavar="NAME",
                      help=f"named tree ({', '.join(sorted(PRESETS))}) or 'auto' (calibrated from the heads)")
    tree.add_argument("--tree-choices", metavar="JSON", help="explicit tree, e.g. '[[0], [0, 0], [1]]'")
    parser.add_argument("--num-heads", type=int, metavar="N", help="expected head count (fails when different)")
    parser.add_argument("--num-layers", type=int, metavar="N",
                        help="expected residual layers per head (fails when different)")
    parser.add_argument("--dtype", choices=DTYPES, default="float16")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none",
                        help="fp8 quantises the base weights; the heads stay in --dtype")
    parser.add_argument("--tp-size", type=int, choices=TP_SIZES, default=1, help="tensor parallel size")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-input-len", type=int, default=4096)
    parser.add_argument("--max-output-len", type=int, default=1024)
    parser.add_argument("--gpu-product", metavar="NAME", help="GPU product the engine is for (part of the key)")
    parser.add_argument("--artifacts-uri", metavar="URI", help="artifact store holding engines/{cacheKey}/")
    parser.add_argument("--cache-key", metavar="KEY", help="cache key (default: a hash of all inputs)")
    parser.add_argument("--work-dir", metavar="DIR", default="/tmp/medusa-build", help="scratch folder")
    parser.add_argument("--examples-dir", metavar="DIR",
                        help=f"TensorRT-LLM examples folder (default ${trtllm.EXAMPLES_DIR_ENV} or "
                             f"{trtllm.DEFAULT_EXAMPLES_DIR})")
    parser.add_argument("--calib-dataset", metavar="PATH", help="calibration dataset for fp8 quantisation")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; build and upload nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_storage_arguments(parser)


def build_options(args: argparse.Namespace, backend: str = "tensorrt-llm") -> BuildOptions:
    """The flags of ``add_engine_arguments`` as the build takes them."""
    spec = EngineSpec(backend=backend, dtype=args.dtype, quantization=args.quantization, tp_size=args.tp_size,
                      max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
                      max_output_len=args.max_output_len, gpu_product=args.gpu_product)
    tree = TreeRequest(preset=args.tree_preset, choices=args.tree_choices, num_heads=args.num_heads,
                       num_layers=args.num_layers)
    return BuildOptions(spec=spec, tree=tree, artifacts_uri=args.artifacts_uri, cache_key=args.cache_key,
                        work_dir=args.work_dir, examples_dir=args.examples_dir, calib_dataset=args.calib_dataset,
                        dry_run=args.dry_run, print_commands=not args.json, storage=storage_settings(args))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT-LLM Medusa engine from local folders",
        description=__doc__.splitlines()[0])
    add_model_folders(parser)
    add_engine_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return build_from_folders(args.base_dir, args.heads_dir, build_options(args))
