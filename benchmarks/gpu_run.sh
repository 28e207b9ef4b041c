#!/usr/bin/env bash
# The GPU path and the GPU benchmarks in one run, for a machine with a CUDA GPU on which $PYTHON
# (default python3) imports the project's packages. Each step's log goes to LOG_DIR (default
# artifacts/gpu); its last lines are printed. Sized to fit a 15-minute GPU lease: about 6 minutes on an
# H200 (docs/results.md, "On a GPU"), one training round and one serving variant, 2 s per load level.
#   bash benchmarks/gpu_run.sh [LOG_DIR]
set -u
cd "$(dirname "$0")/.."
out=${1:-artifacts/gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, log it, print its tail
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s"
    grep -v "^\s*$" "$out/$name.log" | tail -n 30
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import sys, torch, transformers, peft, ray; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| peft', peft.__version__, '| ray', ray.__version__)"
step gpu_tests 150 $py -m pytest -q -p no:cacheprovider tests/unit/test_device.py \
    tests/integration/test_train.py::test_train_on_a_gpu_worker_then_load_on_the_cpu
step train_bench 150 $py benchmarks/train_bench.py --gpu --rounds 1
step serve_bench 200 $py benchmarks/serve_bench.py --gpu --seconds 2 --variants t2r1 --skip options,mixed
