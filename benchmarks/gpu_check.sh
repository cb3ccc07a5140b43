#!/usr/bin/env bash
# One prepared check for a single-GPU (H200) machine that has JAX with CUDA but none of our other
# packages and no network. Run benchmarks/fetch_gpu_wheels.sh first where PyPI is reachable, carry
# .whl/ along, then run this from the repository root. It prints the benchmarks' JSON lines, all on
# synthetic data of CIFAR-10's shape (the real data is too large to bring).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/ae_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/ae_site:${PWD}"
else
  export PYTHONPATH="${PWD}"
fi
nvidia-smi -L || true
python3 -c 'import jax; print("devices:", jax.devices())' || exit 1

# The headline first: the 25-epoch default training on 50,000 images, wall time of the whole
# process (start, data, compilation, training, checkpoints), then its start-up and epoch lines
# (t_start and t_end place the process's start and end among the log lines' times).
# run25 VARIANT [ENV=VALUE...] runs it under those environment variables; CONV_IMPL=flax before
# run25 trains with nn.Conv and nn.max_pool instead of the patch form (model.conv_impl).
run25() {
  local variant=$1 start end rc t_start t_end
  shift
  rm -rf /tmp/ae_gpu25
  t_start=$(date +%T.%N) start=$(date +%s.%N)
  env "$@" python3 main.py --config=configs/default.py --workdir=/tmp/ae_gpu25 \
    --config.data.source=synthetic --config.data.synthetic_train=50000 \
    --config.data.synthetic_test=10000 --config.train.steps_per_jit=390 \
    --config.train.checkpoint_every_steps=9750 --config.eval.enabled=False \
    --config.model.conv_impl=${CONV_IMPL:-auto} 2>/tmp/ae_gpu25.log
  rc=$?
  end=$(date +%s.%N) t_end=$(date +%T.%N)
  python3 -c "import json; print(json.dumps({'bench': 'train_25_epochs', 'variant': '$variant', 'rc': $rc, 'wall_s': round($end - $start, 2), 't_start': '${t_start:0:12}', 't_end': '${t_end:0:12}', 'includes': 'process start, data, compilation, checkpoints'}))"
  grep -E 'backend|Ready to train|epoch (1|2|25)/25 done' /tmp/ae_gpu25.log | cut -c1-250
  if [ -n "${OUT:-}" ]; then cp /tmp/ae_gpu25.log "$OUT/train_25_epochs_$variant.log"; fi
}
run25 cold
run25 cold_again JAX_LOG_COMPILES=1
CONV_IMPL=flax run25 flax_conv
# A researcher's second run of a sweep: the same programs from a persistent compilation cache
# (README, Tests). The first run fills the cache, the second is the one to read.
rm -rf /tmp/ae_jax_cache
run25 cache_fill JAX_COMPILATION_CACHE_DIR=/tmp/ae_jax_cache
run25 cache_warm JAX_COMPILATION_CACHE_DIR=/tmp/ae_jax_cache
# What each of the project's runtime defaults (ae/parallel.py) saves, turned back to JAX's own:
# Triton GEMM autotuning, and reserving 75% of the GPU's memory at the start.
run25 triton_gemm_on XLA_FLAGS=--xla_gpu_enable_triton_gemm=true
run25 preallocate XLA_PYTHON_CLIENT_PREALLOCATE=true

# The benchmarks' JSON lines go to stdout, their logs to /tmp/ae_bench_NAME.log (and $OUT).
bench() {
  local name=$1
  shift
  python3 -m "$@" 2>"/tmp/ae_bench_$name.log" || tail -20 "/tmp/ae_bench_$name.log"
  if [ -n "${OUT:-}" ]; then cp "/tmp/ae_bench_$name.log" "$OUT/"; fi
}
# 1. the train step: one step per call, then a whole epoch (390 steps) per jitted call
bench train_step_1 benchmarks.train_speed --steps=50 --windows=5
bench train_step_390 benchmarks.train_speed --steps=390 --steps_per_jit=390 --windows=3
# the same with nn.Conv and nn.max_pool (cuDNN's convolutions) instead of the patch form
bench train_step_1_flax benchmarks.train_speed --steps=50 --windows=5 --conv_impl=flax
bench train_step_390_flax benchmarks.train_speed --steps=390 --steps_per_jit=390 --windows=3 \
  --conv_impl=flax
# where one step's time goes (per-op trace events; on a GPU a hint, see its docstring)
bench step_profile benchmarks.step_profile --steps=20 --top=10
# 2. exact 10k x 60k queries per metric
bench query benchmarks.query_speed --repeats=5
# the same with fewer, larger chunks (fewer sequential top-k and sort calls; memory is plenty)
bench query_q10k benchmarks.query_speed --repeats=5 --query_chunk=10000 --candidate_floats=268435456
bench query_q10k_g60k benchmarks.query_speed --repeats=5 --query_chunk=10000 \
  --gallery_chunk=65536 --candidate_floats=268435456
# 3. one epoch over 50,000 images and the whole evaluation
bench epoch benchmarks.epoch_time --steps_per_jit=390
bench epoch_flax benchmarks.epoch_time --steps_per_jit=390 --conv_impl=flax
