#!/usr/bin/env bash
# The GPU checks of issue 15 as one command, for a machine with one NVIDIA GPU whose Python
# has torch (CUDA) and transformers but not the rest of r1pipe's dependencies.
#
# Prepare here, once (wheels for the GPU machine's Python 3.12, no dependencies pulled; .whl/
# is git-ignored, so pass it to the device tool's `carry`). The H200 image (KINDS.md in the
# device tool) has torch, transformers, accelerate, typer, rich, pytest, numpy, sympy, but
# not these (datasets is imported only by `r1pipe eval`'s benchmark loader, not needed here):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       hydra-core==1.3.2 omegaconf==2.3.0 pydantic==2.14.4 pydantic_core==2.50.5 \
#       annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0 math-verify==0.9.0 \
#       latex2sympy2_extended==1.11.0
#   python3 -m pip wheel --no-deps -w .whl deepspeed==0.19.8 antlr4-python3-runtime==4.9.3
# (about 5.4 MB in all)
# Then run it there from the repository root:
#   bash scripts/gpu_check.sh OUT_DIR
# It writes OUT_DIR/tests.log (the CUDA-only tests: CUDA-graph decode, bf16 paths) and
# OUT_DIR/bench_gpu.json + bench_gpu.log (scripts/bench_gpu.py on the 365M model: the ratios
# to the plain-PyTorch ceiling and the targets).
set -uo pipefail
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, deepspeed; print(torch.__version__, transformers.__version__, deepspeed.__version__)" | tee -a "$out/gpu.txt"
# The device tool runs one command for at most 600 s: the bench first (the figures;
# its log keeps each part's figures as it finishes, should the limit cut it short), then the
# CUDA-only tests (skipped on CPU machines); 380 + 150 s plus the set-up leaves a margin.
timeout 380 python3 scripts/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.log" | tail -40
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/unit/generation/test_static_decode.py \
  tests/unit/test_model_loading.py 2>&1 | tee "$out/tests.log" | tail -5
