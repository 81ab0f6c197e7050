#!/usr/bin/env bash
# The GPU run: conformance of wce_jax and wce_torch on the GPU (float32, bfloat16) and the
# goal-shape benchmarks, in under ten minutes, printing a markdown table. Run it from any
# folder; it uses the working tree it lives in (PYTHONPATH) and installs nothing.
#   benchmarks/gpu_check.sh            # needs an NVIDIA GPU, JAX and PyTorch with CUDA
#   benchmarks/gpu_check.sh --dry-run  # the plumbing on the CPU, tiny shapes
# Exit status: 0 all passed; 1 a failure or a step out of time; 2 bad arguments;
# 3 no GPU here (says what is missing). See benchmarks/gpu_check.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m benchmarks.gpu_check "$@"
