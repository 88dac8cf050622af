"""Generates the MedusaModel CRD from the pydantic API types.

    python -m medusa_operator.api.crdgen --write crds/ charts/medusa-operator/files/
    python -m medusa_operator.api.crdgen --check crds/ charts/medusa-operator/files/

The CRD is written into every folder given: the repository's crds/ (for kubectl and GitOps)
and the Helm chart's files/ (the chart installs and upgrades it from there).

pydantic's JSON Schema is turned into a Kubernetes structural schema: references are inlined,
``Optional`` unions collapse to their non-null member, titles and defaults are dropped (see
v1alpha1's note on defaults), and integer-or-string quantities keep only their marker and length bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from . import v1alpha1 as api

CRD_FILENAME = f"{api.PLURAL}.{api.GROUP}.yaml"
_DROPPED_KEYS = {"title", "default"}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Revision", "type": "string", "jsonPath": ".status.revisions.current"},
    {"name": "Speedup", "type": "number", "jsonPath": ".status.validation.speedup"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.validation.accuracy"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline references and reduce one pydantic schema node to a structural one."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        if "x-kubernetes-validations" in target and "x-kubernetes-validations" in schema:
            merged["x-kubernetes-validations"] = target["x-kubernetes-validations"] + schema["x-kubernetes-validations"]
        return structural(merged, defs)
    if schema.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in schema.items() if k in ("x-kubernetes-int-or-string", "description", "maxLength")}
    if "anyOf" in schema:
        members = [m for m in schema["anyOf"] if m.get("type") != "null"]
        if len(members) != 1:
            raise ValueError(f"cannot express a union of {members} in a structural schema")
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        inner = structural(members[0], defs)
        rules = inner.get("x-kubernetes-validations", []) + outer.pop("x-kubernetes-validations", [])
        out = {**inner, **outer}
        if rules:
            out["x-kubernetes-validations"] = rules
        return structural(out, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    return out


def model_schema(model: type, description: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    out = structural(raw, defs)
    out["description"] = description
    return out


def build_crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": (
            "A MedusaModel is an LLM with Medusa decoding heads that the operator builds into an engine, "
            "validates against its base model and serves on Triton, autoscaled on tokens per second."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": model_schema(api.MedusaModelSpec, "What to build, how to validate it and how to serve it."),
            "status": model_schema(api.MedusaModelStatus, "What the operator observed; written by the operator."),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "medusa-operator"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["medusa"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values in full instead of as YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd_yaml() -> str:
    header = "# Generated from operator/medusa_operator/api by `make crds`. Do not edit.\n"
    return header + yaml.dump(build_crd(), Dumper=_PlainDumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the MedusaModel CRD from the API types.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", type=Path, nargs="+", help="write the CRD into each DIR")
    mode.add_argument("--check", metavar="DIR", type=Path, nargs="+",
                      help="exit 1 when a DIR's CRD differs from the types")
    args = parser.parse_args(argv)
    text = render_crd_yaml()
    for folder in args.write or []:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CRD_FILENAME).write_text(text)
        print(f"wrote {folder / CRD_FILENAME}")
    stale = [folder / CRD_FILENAME for folder in args.check or []
             if not (folder / CRD_FILENAME).exists() or (folder / CRD_FILENAME).read_text() != text]
    for path in stale:
        print(f"{path} is out of date: run `make crds`", file=sys.stderr)
    if stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
