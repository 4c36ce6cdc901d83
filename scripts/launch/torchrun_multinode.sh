#!/usr/bin/env bash
# r1pipe on several nodes with torchrun (no Ray, no ssh): run this script once on EVERY node,
# with the same environment except NODE_RANK.
#
#   NNODES         number of nodes (default 1)
#   NODE_RANK      this node's index, 0..NNODES-1 (default 0). Under the c10d rendezvous
#                  torchrun assigns node ranks itself and only logs that it ignores this one.
#   MASTER_ADDR    host name or IP of the node that holds the rendezvous (required if NNODES > 1)
#   MASTER_PORT    its TCP port (default 29500), open between the nodes
#   GPUS_PER_NODE  processes per node (default: the GPUs torch sees, else 1)
#   RUN_DIR        the run directory, on a filesystem every node sees (required): all ranks read
#                  the checkpoints in it; rank 0 alone writes manifest.json, metrics and
#                  checkpoint metadata
#   RDZV_ID        a name shared by the nodes of one job (default r1pipe-$MASTER_PORT)
#   PYTHON         the interpreter that has r1pipe installed (default: python)
#
# Arguments: what follows `r1pipe`, without run.dir= (it comes from RUN_DIR):
#   run-all [conf=...] [OVERRIDES...]   or   stage NAME [OVERRIDES...]
#
# Example, two nodes with 8 GPUs each (run on node A with NODE_RANK=0, on node B with 1):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=nodeA GPUS_PER_NODE=8 RUN_DIR=/shared/runs/r1 \
#     scripts/launch/torchrun_multinode.sh run-all conf=r1_qwen2.5_1.5b model.path=/models/q
# scripts/launch/render.py prints the same command line (torchrun mode) or a Slurm script.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "error: give the r1pipe command, e.g. run-all conf=smoke or stage cold-start" >&2
  exit 2
fi
: "${RUN_DIR:?error: set RUN_DIR to a run directory on a filesystem every node sees}"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [ "$NNODES" -gt 1 ]; then
  : "${MASTER_ADDR:?error: set MASTER_ADDR to the host of the rendezvous (the first node)}"
else
  MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
fi
if [ -z "${GPUS_PER_NODE:-}" ]; then
  GPUS_PER_NODE=$("$PYTHON" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
fi
RDZV_ID=${RDZV_ID:-r1pipe-$MASTER_PORT}

exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
  --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$RDZV_ID" \
  -m r1pipe "$@" "run.dir=$RUN_DIR"
