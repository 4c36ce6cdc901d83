"""Render multi-node launch commands for r1pipe: a Slurm batch script or a per-node torchrun line.

How to run
    python scripts/launch/render.py slurm --nodes 4 --gpus-per-node 8 \\
        --run-dir /shared/runs/x --stage run-all --vllm-server-node false -- OVERRIDES...
        prints an sbatch script (submit it with ``sbatch``, or save it and edit it first).
    python scripts/launch/render.py torchrun --nodes 2 --gpus-per-node 8 \\
        --run-dir /shared/runs/x --stage cold-start -- OVERRIDES...
        prints the torchrun command line to run once on every node, with NODE_RANK,
        MASTER_ADDR and MASTER_PORT read from the environment unless given.

Everything after ``--`` is passed to r1pipe as it is (Hydra overrides; ``--from``/``--only``
for run-all), each word quoted with shlex. ``run.dir=`` comes from ``--run-dir``: every node
must see the same run directory (a shared filesystem), since checkpoints written by one rank are
read by all of them and rank 0 alone writes ``manifest.json``. Only the standard library is
used. Bad input exits with status 2 and one line starting with ``error:``.

The rendezvous is torchrun's c10d backend on MASTER_ADDR:MASTER_PORT (the first node). Under
c10d, torchrun assigns node ranks itself and ignores ``--node_rank`` (it logs a warning when
that is not 0); the flag is passed so that ``--rdzv static`` and c10d share one command line.

``--vllm-server-node true`` sets the last node of the allocation aside for a vLLM server and
trains on the other N-1. r1pipe has no server mode yet (its vLLM back end runs colocated, in
the training processes): the rendered script only reserves the node and says so; the
``vllm serve`` line is written as a comment to fill in once that mode exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

# r1pipe's commands that can run under torchrun; stages become ``stage NAME``.
STAGES = ("cold-start", "rl-reasoning", "rejection-sft", "rl-all")
COMMANDS = ("run-all", *STAGES, "eval", "distill")
_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


class LaunchError(ValueError):
    """Bad input; the message is one line naming the option."""


@dataclass
class Launch:
    nodes: int
    gpus_per_node: int
    run_dir: str
    stage: str = "run-all"
    overrides: list[str] = field(default_factory=list)
    port: int = 29500
    rdzv: str = "c10d"  # or "static": --master_addr/--master_port, node rank from --node_rank
    vllm_server_node: bool = False
    vllm_model: str = "MODEL"
    job_name: str = "r1pipe"
    time: str | None = None
    partition: str | None = None
    activate: str | None = None  # a script to source on every node (a venv's bin/activate)
    cpus_per_node: int | None = None  # slurm: CPUs for each node's task (torchrun and its ranks)

    def check(self) -> None:
        if self.nodes < 1:
            raise LaunchError(f"--nodes must be at least 1 (got {self.nodes})")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise LaunchError(f"--cpus-per-node must be at least 1 (got {self.cpus_per_node})")
        if self.gpus_per_node < 1:
            raise LaunchError(f"--gpus-per-node must be at least 1 (got {self.gpus_per_node})")
        if self.vllm_server_node and self.nodes < 2:
            raise LaunchError(
                f"--vllm-server-node true needs --nodes 2 or more: one node serves, the others "
                f"train (got --nodes {self.nodes})"
            )
        if not 1 <= self.port <= 65535:
            raise LaunchError(f"--port must be between 1 and 65535 (got {self.port})")
        if self.stage not in COMMANDS:
            raise LaunchError(f"--stage must be one of {', '.join(COMMANDS)} (got {self.stage!r})")
        if self.rdzv not in ("c10d", "static"):
            raise LaunchError(f"--rdzv must be c10d or static (got {self.rdzv!r})")
        if not self.run_dir.startswith("/"):
            raise LaunchError(
                f"--run-dir must be an absolute path on a filesystem every node shares "
                f"(got {self.run_dir!r})"
            )
        for word in self.overrides:
            if word.startswith("run.dir="):
                raise LaunchError(f"give the run directory with --run-dir, not {word!r}")

    @property
    def train_nodes(self) -> int:
        return self.nodes - 1 if self.vllm_server_node else self.nodes

    @property
    def command(self) -> list[str]:
        """The r1pipe command: ``run-all``, ``stage NAME``, ``eval``, ``distill``."""
        return ["stage", self.stage] if self.stage in STAGES else [self.stage]

    def r1pipe_args(self) -> list[str]:
        """The words after ``-m r1pipe``."""
        return [*self.command, f"run.dir={self.run_dir}", *self.overrides]


def _word(*parts: str) -> str:
    """One shell word joining literal parts and ``$VAR`` references (expanded by the shell)."""
    if not any(_VAR.match(p) for p in parts):
        return shlex.quote("".join(parts))
    out = []
    for p in parts:
        m = _VAR.match(p)
        out.append(f"${{{m.group(1)}}}" if m else re.sub(r'([\\"$`])', r"\\\1", p))
    return '"' + "".join(out) + '"'


def torchrun_words(
    launch: Launch,
    *,
    nnodes: str,
    node_rank: str,
    master_addr: str,
    master_port: str,
    rdzv_id: str,
) -> list[str]:
    """torchrun's shell words up to ``-m r1pipe``; each value a literal or a ``$VAR``."""
    words = ["torchrun", "--nnodes", _word(nnodes), "--node_rank", _word(node_rank)]
    words += ["--nproc_per_node", str(launch.gpus_per_node)]
    if launch.rdzv == "c10d":
        words += ["--rdzv_backend", "c10d", "--rdzv_endpoint", _word(master_addr, ":", master_port)]
        words += ["--rdzv_id", _word(rdzv_id)]
    else:
        words += ["--master_addr", _word(master_addr), "--master_port", _word(master_port)]
    return [*words, "-m", "r1pipe"]


def render_torchrun(
    launch: Launch, master_addr: str = "$MASTER_ADDR", node_rank: str = "$NODE_RANK"
) -> str:
    """The command line to run on every node (each with its own NODE_RANK)."""
    launch.check()
    words = torchrun_words(
        launch,
        nnodes=str(launch.train_nodes),
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=str(launch.port),
        rdzv_id=launch.job_name,
    )
    return " ".join([*words, *map(shlex.quote, launch.r1pipe_args())])


def render_slurm(launch: Launch) -> str:
    """An sbatch script: one srun task per training node, each running torchrun."""
    launch.check()
    sbatch = [
        f"#SBATCH --job-name={launch.job_name}",
        f"#SBATCH --nodes={launch.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={launch.gpus_per_node}",
        "#SBATCH --exclusive",
    ]
    if launch.cpus_per_node:
        sbatch.append(f"#SBATCH --cpus-per-task={launch.cpus_per_node}")
    if launch.time:
        sbatch.append(f"#SBATCH --time={launch.time}")
    if launch.partition:
        sbatch.append(f"#SBATCH --partition={launch.partition}")
    # Expanded by the shell of each srun task, so that every node sees its own SLURM_NODEID.
    inner = torchrun_words(
        launch,
        nnodes="$TRAIN_NODES",
        node_rank="$SLURM_NODEID",
        master_addr="$MASTER_ADDR",
        master_port="$MASTER_PORT",
        rdzv_id="$SLURM_JOB_ID",
    )
    lines = [
        "#!/bin/bash",
        f"# Rendered by: python scripts/launch/render.py slurm (r1pipe {launch.stage}).",
        *sbatch,
        "set -euo pipefail",
        "",
    ]
    if launch.activate:
        lines += [f"source {shlex.quote(launch.activate)}", ""]
    lines += [
        "# Run directory: every node must see it (a shared filesystem). Rank 0 alone writes",
        "# manifest.json, metrics and checkpoint metadata; all ranks read the checkpoints.",
        f"RUN_DIR={shlex.quote(launch.run_dir)}",
        'mkdir -p "$RUN_DIR"',
        "",
        "# Rendezvous: torchrun's c10d store on the first node of the allocation.",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
        f"MASTER_PORT={launch.port}",
        "export MASTER_ADDR MASTER_PORT",
    ]
    srun = ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if launch.cpus_per_node:  # else Slurm's default: one CPU per task, for torchrun and its ranks
        srun.append(f"--cpus-per-task={launch.cpus_per_node}")
    if launch.vllm_server_node:
        lines += [
            "",
            "# The last node is set aside for a vLLM server. r1pipe has NO server mode yet (its",
            "# vLLM back end runs colocated, inside the training processes): this script only",
            "# reserves the node; nothing runs on it. Once a server mode exists, start it here:",
            f'#   srun --nodes=1 --ntasks=1 --nodelist="$VLLM_NODE" vllm serve '
            f"{shlex.quote(launch.vllm_model)} --port 8000 &",
            'VLLM_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | tail -n1)',
            "TRAIN_NODES=$((SLURM_NNODES - 1))",
            'echo "r1pipe: node $VLLM_NODE reserved for a vLLM server (not built in r1pipe yet);'
            ' training on $TRAIN_NODES node(s)"',
        ]
        srun += ['--nodes="$TRAIN_NODES"', '--exclude="$VLLM_NODE"']
    else:
        lines += ["TRAIN_NODES=$SLURM_NNODES"]
        srun += ['--nodes="$TRAIN_NODES"']
    lines += [
        "export TRAIN_NODES",
        "",
        "# One task per node; each runs torchrun, which starts the GPU processes of its node.",
        "# The r1pipe words are passed as arguments of bash -c, so they are quoted only once.",
        " ".join(srun) + " \\",
        "    bash -c " + shlex.quote(" ".join(inner) + ' "$@"') + " r1pipe \\",
        "    "
        + " ".join([*launch.command, '"run.dir=$RUN_DIR"', *map(shlex.quote, launch.overrides)]),
        "",
    ]
    return "\n".join(lines)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2 (argparse prints usage first)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="render.py", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("slurm", "torchrun"))
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True)
    p.add_argument("--run-dir", required=True, help="absolute, on a filesystem every node sees")
    p.add_argument("--stage", default="run-all", help=", ".join(COMMANDS))
    p.add_argument("--port", type=int, default=29500, help="rendezvous port on the first node")
    p.add_argument("--rdzv", default="c10d", help="c10d (default) or static")
    p.add_argument("--vllm-server-node", type=_bool, default=False, metavar="true|false")
    p.add_argument("--vllm-model", default="MODEL", help="for the commented vllm serve line")
    p.add_argument("--job-name", default="r1pipe")
    p.add_argument("--time", help="slurm: #SBATCH --time")
    p.add_argument("--partition", help="slurm: #SBATCH --partition")
    p.add_argument("--cpus-per-node", type=int, help="slurm: CPUs of each node's task")
    p.add_argument("--activate", help="slurm: a script to source first (a venv's bin/activate)")
    p.add_argument("--master-addr", default="$MASTER_ADDR", help="torchrun: host or $VAR")
    p.add_argument("--node-rank", default="$NODE_RANK", help="torchrun: number or $VAR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:cut])
    known = {f.name for f in fields(Launch)}  # argparse's dests are the field names
    launch = Launch(
        **{k: v for k, v in vars(args).items() if k in known}, overrides=argv[cut + 1 :]
    )
    try:
        if args.mode == "slurm":
            print(render_slurm(launch), end="")
        else:
            print(render_torchrun(launch, args.master_addr, args.node_rank))
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
