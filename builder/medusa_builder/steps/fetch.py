"""`medusa-builder fetch`: download a model or head checkpoint into a local folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .. import storage
from . import add_result_argument, add_storage_arguments, storage_settings

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fetch", help="download hf://, s3://, gs://, pvc:// or a path into a folder",
        description="Download into DEST, resuming partial files and skipping files already present with the "
                    "right checksum; writes DEST/.medusa-fetch.json (sizes and sha256).")
    parser.add_argument("uri", metavar="URI", help="hf://ORG/NAME, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, "
                                                   "pvc://CLAIM/PATH or a path")
    parser.add_argument("--dest", required=True, metavar="DIR", help="local destination folder")
    parser.add_argument("--revision", metavar="REV",
                        help="hf: commit to pin; s3/gs: a 'sha256:...' listing revision to verify")
    add_storage_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    storage_settings(args).apply()
    summary = storage.download(args.uri, args.dest, revision=args.revision)
    log.info("fetched %s: %d files, %d bytes (%d downloaded, %d skipped, %d resumed)", args.uri,
             summary["files"], summary["bytes"], summary["bytesDownloaded"], summary["skipped"], summary["resumed"])
    return summary
