#!/usr/bin/env bash
# How the published records are made on a CPU machine, unattended: one worker a core.
#
#   scripts/queue-worker.sh NAME
#
# takes the lines "COMMIT bench-args..." of $QUEUE_DIR/NAME.queue one at a time (first line
# first; append lines while it runs), runs `bench ARGS` with one thread in the clean clone
# $QUEUE_DIR/NAME checked out at COMMIT (so every record names committed code and a command
# anyone can rerun), moves the new records into this checkout's results/ and publishes them
# (scripts/publish-records.sh). Checkpoints and pretrained parts go to
# $QUEUE_DIR/shared-work: a killed worker's unit resumes when its line is queued again.
# Start it detached: nohup setsid scripts/queue-worker.sh qA >> $QUEUE_DIR/qA.log 2>&1 &
# QUEUE_DIR defaults to runs/queue; BENCH_DATA_DIR to ../shared/data/medmnist.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: scripts/queue-worker.sh NAME}
qdir=${QUEUE_DIR:-$repo/runs/queue}
queue=$qdir/$name.queue clone=$qdir/$name
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 QUEUE_DIR=$qdir
export BENCH_DATA_DIR=${BENCH_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data/medmnist}
mkdir -p "$qdir"
while true; do
  line=$(flock "$queue.lock" sh -c 'head -n 1 "$1" 2>/dev/null; sed -i 1d "$1" 2>/dev/null' _ "$queue")
  [ -z "$line" ] && { echo "$(date -u +%FT%T) $name: queue empty"; exit 0; }
  echo "$(date -u +%FT%T) starts: $line"
  read -r commit args <<< "$line"
  [ -d "$clone/.git" ] || git clone -q "$repo" "$clone"
  if ! (cd "$clone" && git fetch -q "$repo" && git checkout -q --detach "$commit" && git reset -q --hard); then
    echo "$(date -u +%FT%T) cannot check out $commit; line skipped"; continue
  fi
  # the worker's defaults, where the line does not say otherwise
  extra=(--no-progress)
  [[ " $args " == *" --results-dir "* ]] || extra+=(--results-dir results)
  [[ " $args " == *" --work-dir "* ]] || extra+=(--work-dir "$qdir/shared-work")
  [[ "$args" == run* && " $args " != *" --checkpoint-every "* ]] && extra+=(--checkpoint-every 120)
  t0=$SECONDS
  # shellcheck disable=SC2086 # the line's arguments, split as written
  (cd "$clone" && "$repo/.venv/bin/python" -m bench.cli $args "${extra[@]}")
  echo "$(date -u +%FT%T) ends with exit $? after $((SECONDS - t0)) s: $line"
  # what changed in the clone's results/ is this line's work (new records, or records it
  # made again with --rerun): move it over under the lock (a line with its own
  # --results-dir elsewhere leaves its records there)
  flock "$qdir/publish.lock" sh -c '
    cd "$1" && git ls-files --others --modified --exclude-standard -- results | grep -v "\.lock$" |
      while read -r f; do mkdir -p "$2/$(dirname "$f")" && mv "$f" "$2/$f" && echo "harvested $f"; done' _ "$clone" "$repo"
  "$repo/scripts/publish-records.sh" "Records from the queue ($name)" || echo "publish failed; the records wait in results/"
done
