#!/bin/bash
# Device run A: GPU tests, tile sweep for llama3-8b, step cost llama3-8b (sweep winners against the committed table).
cd .gpu26 && export PYTHONPATH=$PWD/builder:$PWD/benchmarks:$PWD/tests PYTHONUNBUFFERED=1; git -C .. log -1 --oneline
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
start=$(date +%s)
timeout 200 python3 -m pytest -q -p no:cacheprovider -x tests/gpu 2>&1 | tail -15 | tee $OUT/gpu-tests.log
echo "gpu tests: $(( $(date +%s) - start )) s"
timeout 220 python3 benchmarks/linear_tiles.py --shape llama3-8b --rows 1 32 64 --json-out $OUT/tiles-llama3-8b.json 2>&1 | grep -v "^  " | tee $OUT/sweep-llama3-8b.log
echo "sweep: $(( $(date +%s) - start )) s"
echo skipped step_cost
echo "total: $(( $(date +%s) - start )) s"
