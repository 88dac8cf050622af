#!/usr/bin/env bash
# The GPU run behind the figures in docs/benchmarks.md, end to end on one CUDA machine: convert the
# SmolLM2 GGUF, train heads by self-distillation, calibrate trees and measure base against Medusa
# decoding with benchmarks/medusa_speed.py. Needs torch, transformers, gguf and triton; nothing
# is fetched. Options after `--` go to medusa_speed.py (default: bfloat16 through the Triton
# kernels, a 31-node tree with the whole vocabulary and with an 8,192-token draft vocabulary,
# 12 prompts x 256 tokens).
#
#   benchmarks/gpu_pipeline.sh GGUF_FILE WORK_DIR [train-heads options...] [-- medusa_speed options...]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 GGUF_FILE WORK_DIR [train-heads options...] [-- medusa_speed options...]" >&2
    exit 2
fi
gguf=$1 work=$2
shift 2
train=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do train+=("$1"); shift; done
[ $# -gt 0 ] && shift
speed=("$@")
[ ${#speed[@]} -gt 0 ] || speed=(--dtype bfloat16 --calibrate 31 --draft-vocab 0 --draft-vocab 8192)
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root/builder${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MEDUSA_CACHE="$work/cache"
mkdir -p "$work"

step() { echo "== $(date -u +%H:%M:%S) $*"; }
step convert
python -m medusa_builder convert-gguf --gguf "$gguf" --output "$work/base" --result "$work/convert.json"
step train-heads "${train[@]}"
python -m medusa_builder train-heads --base "$work/base" --output "$work/heads" --device cuda "${train[@]}" \
    --result "$work/train.json"
step benchmark "${speed[@]}"
python "$root/benchmarks/medusa_speed.py" --base "$work/base" --heads "$work/heads" --num-prompts 12 \
    --max-new-tokens 256 --json-out "$work/speed.json" "${speed[@]}"
step done
