#!/bin/bash
# Call 2: main's code (base/) llama3-8b step cost on the same machine, then the qwen2-7b and llama3.2-1b sweeps.
cd .gpu26 && start=$(date +%s) && nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=$PWD/base/builder:$PWD/base/benchmarks PYTHONUNBUFFERED=1 timeout 200 python3 base/benchmarks/step_cost.py --shape llama3-8b --heads 5 --output-layer --nodes 0 15 31 63 --new-tokens 64 --repeats 2 --linear-tiles table --json-out $OUT/step-llama3-8b-main.json > $OUT/step-llama3-8b-main.log 2>&1; echo "base step rc=$?"
grep -v "^{" $OUT/step-llama3-8b-main.log | tail -30
echo "base: $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD/builder:$PWD/benchmarks:$PWD/tests PYTHONUNBUFFERED=1
timeout $(( ${C2_LIMIT:-380} - ($(date +%s) - start) )) python3 benchmarks/linear_tiles.py --shape qwen2-7b llama3.2-1b --rows 1 32 64 --json-out $OUT/tiles-qwen-1b.json > $OUT/sweep-qwen-1b.log 2>&1; echo "sweep rc=$?"
grep -v "^  " $OUT/sweep-qwen-1b.log | tail -40
echo "total: $(( $(date +%s) - start )) s"
