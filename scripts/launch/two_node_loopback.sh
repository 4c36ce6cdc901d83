#!/usr/bin/env bash
# Two "nodes" on one machine: two torchrun agents (--nnodes 2 --nproc_per_node 1, node ranks 0
# and 1) meet through the c10d rendezvous on 127.0.0.1 and train one world of 2 ranks (gloo on
# CPU), cold-start then rl-reasoning of conf=smoke under ZeRO-2, in one shared run directory.
# It checks the multi-node path (rendezvous across agents, rank 0 writing the manifest) without
# a second machine. Run from the repository root:
#
#   scripts/launch/two_node_loopback.sh
#
#   RUN_DIR  run directory (default /tmp/twonode); must not exist yet or be empty
#   PORT     rendezvous port (default 29533)
#   PYTHON   interpreter with r1pipe (default .venv/bin/python)
# Logs: $RUN_DIR.logs/STAGE.node{0,1}.log. Exit status: 0 if every process of both stages did.
set -euo pipefail
RUN_DIR=${RUN_DIR:-/tmp/twonode}
PORT=${PORT:-29533}
PYTHON=${PYTHON:-.venv/bin/python}
LOGS=$RUN_DIR.logs
if [ -n "$(ls -A "$RUN_DIR" 2>/dev/null)" ]; then
  echo "error: $RUN_DIR is not empty; remove it or set RUN_DIR" >&2
  exit 2
fi
mkdir -p "$LOGS"
export OMP_NUM_THREADS=1

status=0
for stage in cold-start rl-reasoning; do
  start=$(date +%s.%N)
  pids=()
  for node_rank in 0 1; do
    "$PYTHON" -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --node_rank "$node_rank" \
      --rdzv_backend c10d --rdzv_endpoint "127.0.0.1:$PORT" --rdzv_id "twonode-$stage" \
      -m r1pipe stage "$stage" conf=smoke "run.dir=$RUN_DIR" deepspeed=zero2 \
      >"$LOGS/$stage.node$node_rank.log" 2>&1 &
    pids+=($!)
  done
  codes=()
  for pid in "${pids[@]}"; do
    if wait "$pid"; then codes+=(0); else codes+=($?); status=1; fi
  done
  end=$(date +%s.%N)
  printf '%s: node exit codes %s, wall %.1f s\n' "$stage" "${codes[*]}" "$(awk "BEGIN {print $end - $start}")"
done

"$PYTHON" - "$RUN_DIR" <<'PY'
import json, sys
stages = json.load(open(f"{sys.argv[1]}/manifest.json"))["stages"]
for name, entry in stages.items():
    print(f"manifest: {name}: {entry['status']}, checkpoint {entry.get('checkpoint')}")
PY
exit "$status"
