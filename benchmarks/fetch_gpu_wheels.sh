#!/usr/bin/env bash
# Downloads, here (with PyPI access), the wheels that benchmarks/gpu_check.sh installs on a GPU
# machine that has JAX with CUDA, flax, optax, orbax, numpy, numba, scikit-learn and matplotlib but
# not these. They land in .whl/ (git-ignored) and travel with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl ml-collections tensorboardX umap-learn pynndescent
ls -l .whl
