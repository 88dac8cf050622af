"""`medusa-builder package`: turn a cached engine entry into a Triton model repository.

``--backend tensorrt-llm``: ``ensemble``, ``preprocessing``, ``postprocessing`` and
``tensorrt_llm`` rendered from templates; ``--backend reference``: the PyTorch reference
runtime's repository. The repository is uploaded to ``--output-uri`` with ``repository.json``
written last (see ``medusa_builder.repository``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..build.spec import BACKENDS
from ..repository.package import PackageOptions, package
from . import add_result_argument, add_storage_arguments, storage_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("package", help="turn an engine entry into a Triton model repository",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--engine-uri", required=True, metavar="URI", help="engine entry ({artifacts}/engines/KEY)")
    parser.add_argument("--backend", choices=BACKENDS, default="tensorrt-llm")
    parser.add_argument("--output-uri", required=True, metavar="URI", help="where the repository is written")
    parser.add_argument("--max-batch-size", type=int, metavar="N", help="default: the engine's max batch size")
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9, metavar="F",
                        help="share of free GPU memory for the KV cache (default 0.9)")
    parser.add_argument("--enable-kv-cache-reuse", action="store_true", help="reuse KV-cache blocks across requests")
    parser.add_argument("--decoupled", action="store_true", help="decoupled (streaming) tensorrt_llm model")
    parser.add_argument("--instance-count", type=int, default=1, metavar="N",
                        help="instances of the pre/postprocessing models")
    parser.add_argument("--mount-path", default="/models", metavar="DIR",
                        help="where the serving container mounts the repository (engine path; default /models)")
    parser.add_argument("--device", default="auto", help="reference backend: cpu, cuda or auto")
    parser.add_argument("--work-dir", default="/tmp/medusa-package", metavar="DIR", help="scratch folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_storage_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return package(PackageOptions(
        engine_uri=args.engine_uri, output_uri=args.output_uri, backend=args.backend,
        max_batch_size=args.max_batch_size, kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
        enable_kv_cache_reuse=args.enable_kv_cache_reuse, decoupled=args.decoupled,
        instance_count=args.instance_count, mount_path=args.mount_path, device=args.device, work_dir=args.work_dir,
        storage=storage_settings(args)))
