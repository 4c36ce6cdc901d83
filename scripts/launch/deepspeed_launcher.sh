#!/usr/bin/env bash
# r1pipe on several nodes with the DeepSpeed launcher and a hostfile (scripts/launch/
# hostfile.example): run once, on the first node; the launcher starts every node over ssh
# (pdsh) and each node's processes.
#
#   HOSTFILE     "HOST slots=GPUS" lines (default: scripts/launch/hostfile.example)
#   RUN_DIR      the run directory, on a filesystem every node sees (required); rank 0 alone
#                writes manifest.json, metrics and checkpoint metadata
#   MASTER_ADDR  address of the first host as the others reach it (default: the launcher asks
#                the first host for `hostname -I`)
#   MASTER_PORT  rendezvous port (default 29500)
#   NUM_NODES    use the first NUM_NODES hosts of the hostfile (default: all)
#   DEEPSPEED    the launcher (default: deepspeed, from the environment that has r1pipe)
#   DS_EXTRA     more launcher options, split on spaces (e.g. "--no_ssh --node_rank 1")
#
# Arguments: what follows `r1pipe` (run-all ... or stage NAME ...), without run.dir=.
#
# What the launcher needs (read from deepspeed/launcher/runner.py):
#   - passwordless ssh to every host and `pdsh` installed on the first node;
#   - the same Python path on every host: each node runs `cd $PWD; <this python> -m
#     deepspeed.launcher.launch ...`;
#   - environment: only variables starting with PYTHON, MLFLOW, MV2, UCX (and NCCL, CUDA on
#     GPUs) are carried to the other nodes; put others (R1PIPE_DATA, HF_HOME, ...) as KEY=VALUE
#     lines in ./.deepspeed_env or ~/.deepspeed_env;
#   - --no_local_rank: r1pipe reads LOCAL_RANK from the environment, and would reject the
#     `--local_rank=N` argument the launcher adds otherwise as a bad override.
# Without ssh, run the same command on every node with DS_EXTRA="--no_ssh --node_rank R" (R from 0,
# in hostfile order) and MASTER_ADDR set; tried on one machine with a two-host hostfile
# (127.0.0.1 and localhost, slots=1 each): both ranks ran, one world of 2.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "error: give the r1pipe command, e.g. run-all conf=smoke or stage cold-start" >&2
  exit 2
fi
: "${RUN_DIR:?error: set RUN_DIR to a run directory on a filesystem every node sees}"
HERE=$(cd "$(dirname "$0")" && pwd)
HOSTFILE=${HOSTFILE:-$HERE/hostfile.example}
DEEPSPEED=${DEEPSPEED:-deepspeed}
args=(--hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" --no_local_rank)
if [ -n "${MASTER_ADDR:-}" ]; then args+=(--master_addr "$MASTER_ADDR"); fi
if [ -n "${NUM_NODES:-}" ]; then args+=(--num_nodes "$NUM_NODES"); fi
if [ -n "${DS_EXTRA:-}" ]; then read -r -a extra <<<"$DS_EXTRA"; args+=("${extra[@]}"); fi

exec "$DEEPSPEED" "${args[@]}" --module r1pipe "$@" "run.dir=$RUN_DIR"
