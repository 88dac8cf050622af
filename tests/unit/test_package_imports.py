"""The four packages import only what their install brings (issue 24, "Done when": the operator
depends on common only; no import cycles, the importlib one included; importing the operator pulls
no torch, boto3 or matplotlib; the runtime's Triton model imports no kopf; each distribution's
pyproject.toml declares what its package imports).

What a module loads is measured in a fresh interpreter (an earlier test's imports would hide it);
who may import whom is read from the source with ``ast``, so a lazy import inside a function is
told apart from one at module level.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"medusa_common": REPO / "common", "medusa_operator": REPO / "operator",
            "medusa_builder": REPO / "builder", "medusa_runtime": REPO / "runtime"}
# package -> the other project packages it may import at module level, and inside functions.
ALLOWED = {
    "medusa_common": (set(), set()),
    "medusa_operator": ({"medusa_common"}, {"medusa_common"}),
    "medusa_runtime": ({"medusa_common"}, {"medusa_common"}),
    "medusa_builder": ({"medusa_common"}, {"medusa_common", "medusa_runtime"}),
}


def _loaded_after(imports: list[str], prelude: str = "") -> set[str]:
    """Top-level names of every module loaded after importing ``imports`` in a fresh interpreter."""
    code = (f"{prelude}\nimport importlib, json, sys\n"
            f"for name in {imports!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*(str(p) for p in PACKAGES.values()),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _modules(package: str) -> list[tuple[str, Path]]:
    root = PACKAGES[package]
    found = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def test_the_operator_loads_no_ml_stack_and_no_builder() -> None:
    operator_modules = [name for name, _ in _modules("medusa_operator") if not name.endswith("__main__")]
    assert {"medusa_operator.cli", "medusa_operator.controller.reconciler",
            "medusa_operator.controller.handlers"} <= set(operator_modules)
    loaded = _loaded_after(operator_modules)
    assert not loaded & {"torch", "boto3", "botocore", "matplotlib", "numpy", "transformers", "medusa_builder",
                         "medusa_runtime"}


def test_the_triton_model_loads_no_operator_or_builder_stack() -> None:
    # Triton's Python backend provides triton_python_backend_utils to the models it loads.
    prelude = "import sys, types\nsys.modules['triton_python_backend_utils'] = types.ModuleType('stand-in')"
    loaded = _loaded_after(["medusa_runtime.serving.triton_model"], prelude)
    assert "torch" in loaded  # it did import the engine
    assert not loaded & {"kopf", "lightkube", "boto3", "botocore", "matplotlib", "jinja2", "medusa_builder",
                         "medusa_operator"}


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for each import in the file; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    lazy_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) not in lazy_nodes) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name` may name a submodule: count it as one when such a file exists.
            names = [f"{base}.{a.name}" for a in node.names]
            found += [(n if n in ALL_MODULES else base, id(node) not in lazy_nodes) for n in names]
    return found


ALL_MODULES = {name: path for package in PACKAGES for name, path in _modules(package)}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_imports_only_what_it_may(package: str) -> None:
    at_top, lazily = ALLOWED[package]
    wrong = []
    for module, path in _modules(package):
        for imported, top_level in _imports(module, path):
            target = imported.split(".")[0]
            if target in PACKAGES and target != package and target not in (at_top if top_level else lazily):
                wrong.append(f"{module} imports {imported}{'' if top_level else ' (inside a function)'}")
            if package == "medusa_common" and top_level and target not in PACKAGES:
                if target not in sys.stdlib_module_names and target != "__future__":
                    wrong.append(f"{module} imports {imported} at module level (common is standard library only)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_and_no_modules_loaded_by_name() -> None:
    graph = {name: {i for i, top in _imports(name, path) if top and i in ALL_MODULES and i != name}
             for name, path in ALL_MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))
    # A module loaded through importlib by name hides its edge from the graph above.
    by_name = [m for m, p in ALL_MODULES.items()
               if "import_module(f\"medusa_" in p.read_text() or "import_module(\"medusa_" in p.read_text()]
    assert not by_name


def _builder_functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(module, node) for module, path in _modules("medusa_builder")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_parsed_flags_stay_in_the_builder_steps() -> None:
    # Issue 24 (the builder's layout): steps/ only parse flags and hand typed options on, so no
    # module past them imports argparse or takes the parsed arguments (a parameter named args).
    def is_step(module: str) -> bool:
        return module == "medusa_builder.cli" or module.startswith("medusa_builder.steps")

    wrong = [f"{module} imports argparse" for module, path in _modules("medusa_builder")
             if not is_step(module) and any(i.split(".")[0] == "argparse" for i, _ in _imports(module, path))]
    wrong += [f"{module}.{function.name} takes the parsed arguments" for module, function in _builder_functions()
              if not is_step(module) and any(a.arg == "args" for a in function.args.args + function.args.kwonlyargs)]
    assert not wrong, "\n".join(wrong)


def _callers(package: str, name: str) -> set[str]:
    """Modules of ``package`` with a function that calls ``name`` (as a name or an attribute)."""
    return {module for module, path in _modules(package)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name}


def test_engine_keys_are_made_in_one_place_on_each_side() -> None:
    # Issue 24: one engine cache key (medusa_common.engine_key). The builder hashes nothing itself;
    # build-engine and build both fill the key's inputs in through build.key, the operator through
    # revision.py.
    assert not _callers("medusa_builder", "content_key")
    assert _callers("medusa_builder", "EngineInputs") == {"medusa_builder.build.key"}
    assert _callers("medusa_operator", "EngineInputs") == {"medusa_operator.revision"}


# ---------------------------------------------------------------------------------------------
# Each package is a distribution of its own (issue 24: "`pip install .` (operator), `.[builder]` and
# `.[runtime]` each import only what they need"): what its pyproject.toml declares must be what its
# source imports, so that installing it alone gives it everything it loads and nothing it does not.

# package -> the folder of the pyproject.toml that makes it a distribution
DISTRIBUTIONS = {"medusa_common": REPO / "common", "medusa_operator": REPO, "medusa_builder": REPO / "builder",
                 "medusa_runtime": REPO / "runtime"}
# Modules that the process hosting a package provides, not a distribution.
HOST_PROVIDED = {"triton_python_backend_utils"}  # Triton's Python backend, to the models it loads
# Declared dependencies no module imports, and who uses them.
USED_THROUGH_ANOTHER = {
    "medusa_runtime": {"gguf": "transformers, to read GGUF checkpoints",
                       "sentencepiece": "transformers, for SentencePiece tokenizers",
                       "accelerate": "transformers, which loads no GGUF checkpoint without it (convert-gguf)"},
}


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    from packaging.requirements import Requirement

    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def _declared(package: str) -> tuple[set[str], set[str]]:
    """(the base dependencies, those of every extra) of the package's distribution, by name; the
    operator's `test` extra is the test suite's, not the operator's."""
    project = _project(DISTRIBUTIONS[package])
    extras = {name: deps for name, deps in project.get("optional-dependencies", {}).items()
              if not (package == "medusa_operator" and name == "test")}
    return ({_name(r) for r in project.get("dependencies", [])},
            {_name(r) for deps in extras.values() for r in deps})


PROJECT_DISTRIBUTIONS = {_project(folder)["name"]: package for package, folder in DISTRIBUTIONS.items()}


def _third_party_imports(package: str) -> dict[str, bool]:
    """Top-level name of each module from outside the project and the standard library that the
    package imports -> whether some module imports it at module level."""
    found: dict[str, bool] = {}
    for module, path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                    continue
                found[top] = found.get(top, False) or id(node) not in lazy
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_distribution_declares_what_its_package_imports_and_nothing_else(package: str) -> None:
    from importlib.metadata import packages_distributions

    providers = {module: {re.sub(r"[-_.]+", "-", d).lower() for d in dists}
                 for module, dists in packages_distributions().items()}
    base, extras = _declared(package)
    # What a lazy import may also use: the dependencies of the project distributions it names.
    reachable = set(base | extras)
    for name in base | extras:
        if name in PROJECT_DISTRIBUTIONS:
            reachable |= set().union(*_declared(PROJECT_DISTRIBUTIONS[name]))
    wrong = []
    imported_distributions: set[str] = set()
    for module, top_level in sorted(_third_party_imports(package).items()):
        if module in HOST_PROVIDED:
            continue
        if module not in providers:
            wrong.append(f"{module}: no installed distribution provides it")
            continue
        imported_distributions |= providers[module]
        allowed = base if top_level else reachable
        if not providers[module] & allowed:
            wrong.append(f"{module} ({'/'.join(sorted(providers[module]))}) is imported"
                         f"{' at module level' if top_level else ''} but not declared"
                         f"{'' if top_level else ' (nor by an extra)'}")
    indirect = USED_THROUGH_ANOTHER.get(package, {})
    unused = {name for name in base - set(PROJECT_DISTRIBUTIONS) if name not in imported_distributions} - set(indirect)
    wrong += [f"{name} is declared but nothing imports it" for name in sorted(unused)]
    wrong += [f"{name} is listed as used through another but is not declared" for name in sorted(set(indirect) - base)]
    assert not wrong, f"{DISTRIBUTIONS[package] / 'pyproject.toml'}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_distribution_declares_the_project_packages_it_may_import(package: str) -> None:
    """ALLOWED above (module level, inside functions) is what the pyproject.toml files declare:
    the base dependencies for module-level imports, an extra for lazy ones."""
    base, extras = _declared(package)
    at_top, lazily = ALLOWED[package]
    assert {PROJECT_DISTRIBUTIONS[n] for n in base if n in PROJECT_DISTRIBUTIONS} == at_top
    assert {PROJECT_DISTRIBUTIONS[n] for n in base | extras if n in PROJECT_DISTRIBUTIONS} == lazily


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_distribution_builds_from_its_folder_with_its_package_alone(package: str, tmp_path: Path) -> None:
    """A wheel built from the distribution's folder alone (the root: pyproject.toml, README.md and
    operator/) holds its package and no other, and requires what its pyproject.toml declares."""
    import zipfile

    folder = DISTRIBUTIONS[package]
    source = tmp_path / "source"
    if folder == REPO:
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            (source / name).write_bytes((REPO / name).read_bytes())
        shutil.copytree(REPO / "operator" / package, source / "operator" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copytree(folder, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {package}
    requires = {_name(line.split(":", 1)[1].split(";")[0].strip())
                for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    base, extras = _declared(package)
    test_extra = {_name(r) for r in _project(folder).get("optional-dependencies", {}).get("test", [])} \
        if package == "medusa_operator" else set()
    assert requires == base | extras | test_extra
