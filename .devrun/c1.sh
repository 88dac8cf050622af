#!/bin/bash
# Call 1: all of tests/gpu on the branch, the llama3-8b tile sweep, llama3-8b step cost (table and sweep winners).
cd .gpu26 && export PYTHONPATH=$PWD/builder:$PWD/benchmarks:$PWD/tests PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
start=$(date +%s)
timeout 210 python3 -m pytest -q -p no:cacheprovider --noconftest -rfE tests/gpu > $OUT/gpu-tests.log 2>&1; echo "pytest rc=$?"
tail -30 $OUT/gpu-tests.log
echo "gpu tests: $(( $(date +%s) - start )) s"
timeout 200 python3 benchmarks/linear_tiles.py --shape llama3-8b --rows 1 32 64 --json-out $OUT/tiles-llama3-8b.json > $OUT/sweep-llama3-8b.log 2>&1; echo "sweep rc=$?"
grep -v "^  " $OUT/sweep-llama3-8b.log | tail -40
echo "sweep: $(( $(date +%s) - start )) s"
src=table; [ -s $OUT/tiles-llama3-8b.json ] && src="table $OUT/tiles-llama3-8b.json"
timeout $(( 590 - ($(date +%s) - start) )) python3 benchmarks/step_cost.py --shape llama3-8b --heads 5 --output-layer --nodes 0 15 31 63 --new-tokens 64 --repeats 2 --linear-tiles $src --json-out $OUT/step-llama3-8b.json > $OUT/step-llama3-8b.log 2>&1; echo "step rc=$?"
grep -v "^{" $OUT/step-llama3-8b.log | tail -40
echo "total: $(( $(date +%s) - start )) s"
