#!/bin/bash
# Device run B: tile sweeps for qwen2-7b and llama3.2-1b, then their step costs with the sweep winners.
cd .gpu26 && export PYTHONPATH=$PWD/builder:$PWD/benchmarks:$PWD/tests PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
start=$(date +%s)
timeout 240 python3 benchmarks/linear_tiles.py --shape qwen2-7b llama3.2-1b --rows 1 32 64 --json-out $OUT/tiles-qwen-1b.json 2>&1 | grep -v "^  " | tee $OUT/sweep-qwen-1b.log
echo "sweep: $(( $(date +%s) - start )) s"
for shape in llama3.2-1b qwen2-7b; do
timeout $(( 585 - ($(date +%s) - start) )) python3 benchmarks/step_cost.py --shape $shape --heads 5 --output-layer --nodes 0 15 31 63 --new-tokens 64 --repeats 2 --linear-tiles $OUT/tiles-qwen-1b.json --json-out $OUT/step-$shape.json 2>&1 | grep -v "^{" | tee $OUT/step-$shape.log
done
echo "total: $(( $(date +%s) - start )) s"
