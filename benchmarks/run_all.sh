#!/usr/bin/env bash
# Every benchmark, one after the other on an otherwise idle machine; each prints its ratios and
# writes benchmarks/results/<name>.json, and its output is kept in benchmarks/results/<name>.txt.
#   bash benchmarks/run_all.sh            (about 55 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
for bench in training_throughput data_loading synthetic communication augment simulation_overhead \
             deployment_overhead scale scale_deployed; do
    echo "== bench_${bench} ($(date -u +%H:%M:%S))"
    python "benchmarks/bench_${bench}.py" 2>&1 | grep -v -E "Warning|warnings.warn|^USDT:" \
        | tee "benchmarks/results/bench_${bench}.txt"
done
# EF error of the best federated model and prediction speed: the model is simulations/configs/
# ef.toml's federation (trained here if its runs are missing, ~11 min a seed on 2 cores; resumed otherwise)
echo "== bench_ef ($(date -u +%H:%M:%S))"
python simulations/run.py --config simulations/configs/ef.toml > /dev/null  # the harness keeps its logs under runs/ef/
python benchmarks/bench_ef.py 2>&1 | grep -v -E "Warning|warnings.warn|^USDT:" \
    | tee benchmarks/results/bench_ef.txt
# GPU readiness (AMP, sites sharing one GPU): only where a GPU is present
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "== bench_gpu ($(date -u +%H:%M:%S))"
    python benchmarks/bench_gpu.py 2>&1 | grep -v -E "Warning|warnings.warn|^USDT:" \
        | tee benchmarks/results/bench_gpu.txt
else
    echo "== bench_gpu: no GPU on this machine, not measured"
fi
