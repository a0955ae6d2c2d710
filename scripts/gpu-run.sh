#!/usr/bin/env bash
# The prepared GPU run (about 10 minutes on one H100 or H200): what this CPU-only project
# can only record when a GPU is lent. From the repository root of a clean checkout:
#
#   scripts/gpu-run.sh OUT_DIR [DATA_DIR]
#
# 1. `bench perf` of every classification method of the `full` preset at 28 px (the
#    H100/H200 targets: >= 5,000 images/s in training and inference, batch-1 latency
#    <= 5 ms), and DiffMIC-v2 at the paper's 224 px;
# 2. the generation `standard` units that need a GPU (DM on BreastMNIST and RetinaMNIST,
#    ODM on RetinaMNIST, 3 seeds each: 9 units) packed on the one GPU with `--jobs 9`,
#    under CUDA MPS where the daemon can be started.
# Records go to OUT_DIR/results (copy them into results/ and commit); logs to OUT_DIR.
# Each step has its own time limit, so one that overruns leaves the others their time.
# BENCH overrides how bench is called (default: python3 -m bench.cli from this checkout).
set -uo pipefail
out=${1:?usage: scripts/gpu-run.sh OUT_DIR [DATA_DIR]}
data=${2:-${BENCH_DATA_DIR:-../shared/data/medmnist}}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 BENCH_DATA_DIR=$data PYTHONUNBUFFERED=1
read -r -a bench <<< "${BENCH:-python3 -m bench.cli}"
[ -z "$(git status --porcelain -- bench methods baselines 2>/dev/null)" ] \
  || { echo "gpu-run: bench/, methods/ or baselines/ has uncommitted changes; records must come from committed code" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null; then
  echo "CUDA MPS daemon started"; trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
step() {  # step NAME SECONDS bench-args...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "${bench[@]}" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - t0)) s (limit $limit s; log $out/$name.log)"
}
step perf-28px 200 perf --suite classification --preset full --results-dir "$out/results" --out-dir "$out"
step perf-diffmic_v2-224px 60 perf --method diffmic_v2 --image-size 224 --channels 3 --classes 2 --results-dir "$out/results"
step generation 330 run --suite generation --preset standard --methods dm,odm \
  --datasets breastmnist,retinamnist --seeds 0,1,2 --jobs 9 --no-progress \
  --results-dir "$out/results" --work-dir "$out/work"
echo "records: $(find "$out/results" -name 'seed*.json' 2>/dev/null | wc -l) units," \
  "$(find "$out/results/perf" -name '*.json' 2>/dev/null | wc -l) perf, in $out/results"
