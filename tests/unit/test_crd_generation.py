"""The committed CRD is exactly what the API types generate, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from medusa_operator.api import crdgen

REPO = Path(__file__).resolve().parents[2]
CRD_COPIES = [REPO / "crds", REPO / "charts" / "medusa-operator" / "files"]


def _schema() -> dict:
    return crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crds_match_the_api_types() -> None:
    expected = crdgen.render_crd_yaml()
    for folder in CRD_COPIES:
        committed = (folder / crdgen.CRD_FILENAME).read_text()
        assert committed == expected, f"{folder / crdgen.CRD_FILENAME} drifted from the API types: run `make crds`"


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    (tmp_path / crdgen.CRD_FILENAME).write_text(crdgen.render_crd_yaml().replace("Phase", "Stage"))
    try:
        crdgen.main(["--check", str(tmp_path)])
    except SystemExit as exc:
        assert exc.code == 1
    else:
        raise AssertionError("a drifted CRD passed the check")


def test_every_spec_and_status_field_has_a_description() -> None:
    schema = _schema()
    missing = [path for root in ("spec", "status")
               for path, node in _walk(schema["properties"][root], root)
               if path.count(".") >= 1 and not path.endswith("[]") and "{}" not in path and not node.get("description")]
    assert missing == []


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string), nothing is a union, and no defaults are set."""
    for path, node in _walk(_schema()):
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        assert "default" not in node, f"{path} has a default, which would drift GitOps diffs"
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_crd_names_columns_and_subresources() -> None:
    crd = yaml.safe_load(crdgen.render_crd_yaml())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "medusamodels.inference.medusa.dev"
    assert spec["names"]["shortNames"] == ["mm"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["PHASE", "REVISION", "SPEEDUP", "ACCURACY", "REPLICAS", "AGE"]
