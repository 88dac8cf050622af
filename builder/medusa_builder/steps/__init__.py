"""The builder steps, one module each; ``medusa_builder.cli`` registers them.

Each module exposes ``register(subparsers)``, which adds its command's parser (arguments only,
no work at import) with a ``func`` default that takes the parsed arguments and returns the
step's result. A step only parses: its ``run`` turns the parsed arguments into typed options or
keyword arguments and calls the function that does the work (in ``build``, ``repository``,
``validation`` or ``storage``), so no ``argparse.Namespace`` leaves these modules. The helpers
below are the flags every step spells the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..storage import StorageSettings


def add_result_argument(parser: argparse.ArgumentParser) -> None:
    """Every step accepts --result FILE."""
    parser.add_argument("--result", metavar="FILE", help="also write the JSON result to FILE")


class _StoreWithDeprecatedSpellings(argparse._StoreAction):
    """Stores the value under the first (current) spelling and warns when an older one is used."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001 - argparse's API
        if option_string is not None and option_string != self.option_strings[0]:
            print(f"medusa-builder: {option_string} is deprecated and will be removed; use {self.option_strings[0]}",
                  file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def add_flag(parser: Any, flag: str, *deprecated: str, **kwargs: Any) -> argparse.Action:
    """Add ``flag`` with older spellings that still work (and say they are deprecated)."""
    if deprecated:
        kwargs["help"] = f"{kwargs.get('help', '')} ({', '.join(deprecated)}: deprecated spelling)".strip()
        kwargs.setdefault("action", _StoreWithDeprecatedSpellings)
    return parser.add_argument(flag, *deprecated, **kwargs)


def add_model_folders(parser: argparse.ArgumentParser) -> None:
    """The local base model and heads folders (--base-dir, --heads-dir), as every step that reads
    local folders names them; ``--base`` and ``--heads`` are the older spellings."""
    add_flag(parser, "--base-dir", "--base", required=True, metavar="DIR", help="base model folder (Hugging Face layout)")
    add_flag(parser, "--heads-dir", "--heads", required=True, metavar="DIR", help="Medusa head checkpoint folder")


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every step that touches storage accepts."""
    parser.add_argument("--credentials-dir", metavar="DIR",
                        help="folder with one file per credential (HF_TOKEN, AWS_ACCESS_KEY_ID, ...), "
                             "e.g. a mounted Secret")
    parser.add_argument("--s3-endpoint", metavar="URL",
                        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)")


def storage_settings(args: argparse.Namespace) -> StorageSettings:
    """The storage flags of ``add_storage_arguments`` as the storage module takes them."""
    return StorageSettings(credentials_dir=args.credentials_dir, s3_endpoint=args.s3_endpoint)
