#!/usr/bin/env bash
# The prepared GPU run (about 10 minutes on one H100 or H200): what this CPU-only project
# can only record when a GPU is lent. From the repository root of a clean checkout:
#
#   scripts/gpu-run.sh OUT_DIR [DATA_DIR]
#
# 1. `bench perf` of every classification method of the `full` preset at 28 px (the
#    H100/H200 targets: >= 5,000 images/s in training and inference, batch-1 latency
#    <= 5 ms), and DiffMIC-v2 at the paper's 224 px;
# 2. issue 34's sweeps on RetinaMNIST at the generation `standard` preset, seeds 0 and 1:
#    ODM's ordinal weight x guidance grid (4 x 3) and the DM's guidance (3), each study
#    shared by several `bench sweep --worker` processes packed on the one GPU (one journal
#    storage a study), under CUDA MPS where the daemon can be started. Points that differ
#    only in guidance share one trained model. (This step used to remake the 9 H200
#    generation `standard` units; `bench run` on the CPU has remade them.)
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
pids=() sweep_limit=360
sweep() {  # sweep METHOD PARAMS SEED WORKERS: one grid study, its workers in parallel
  local method=$1 params=$2 seed=$3 workers=$4 w
  for ((w = 0; w < workers; w++)); do
    timeout "$sweep_limit" "${bench[@]}" sweep "$method" --params "$params" --dataset retinamnist \
      --suite generation --preset standard --grid --values guidance=1.0,1.5,2.0 \
      --seed "$seed" --worker "$w" --storage "journal://$out/sweeps/$method-seed$seed.log" \
      --results-dir "$out/results" --work-dir "$out/work" --no-progress \
      > "$out/sweeps/$method-seed$seed-worker$w.log" 2>&1 &
    pids+=($!)
  done
}
t0=$SECONDS
mkdir -p "$out/sweeps"
for seed in 0 1; do  # guidance first: an ODM study's first 4 workers train its 4 weights at once
  sweep odm guidance,ordinal_weight "$seed" 4
  sweep dm guidance "$seed" 1
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
echo "sweeps: ${#pids[@]} workers, $failed failed or cut, after $((SECONDS - t0)) s (limit $sweep_limit s; logs $out/sweeps)"
echo "records: $(find "$out/results" -name 'seed*.json' 2>/dev/null | wc -l) units," \
  "$(find "$out/results/perf" -name '*.json' 2>/dev/null | wc -l) perf, in $out/results"
