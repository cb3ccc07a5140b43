"""Helpers shared by the benchmarks: JSON lines, timing windows, the machine's matmul peak."""

import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ae import parallel
from ae.cpu import compiler_options, host_memory


def emit(**fields):
  print(json.dumps(fields), flush=True)


def emit_machine():
  """One line naming the machine: ratios between frameworks differ between CPUs (measured here:
  Keras/TF 1.23x ours on one 2-core x86-64 CPU, 0.84x on another, an AVX2-only AMD EPYC)."""
  cpu, flags = platform.processor() or platform.machine(), set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          cpu = value.strip()
        elif key.strip() in ('flags', 'Features'):
          flags = set(value.split())
          break
  except OSError:
    pass
  mesh = parallel.make_mesh()
  emit(bench='machine', cpu=cpu, cores=os.cpu_count(),
       isa=[f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'asimd', 'sve') if f in flags],
       backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
       device_count=jax.device_count(), jax=jax.__version__,
       xla_flags=os.environ.get('XLA_FLAGS', ''), host_memory_reuse=host_memory.one_arena,
       train_step_compiler_options=compiler_options.for_train_step(mesh),
       inference_compiler_options=compiler_options.for_inference(mesh))


def log(msg):
  print(msg, file=sys.stderr, flush=True)


def time_call(fn, repeats):
  """Median wall seconds of fn() over repeats calls (fn must block until its work is done)."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def own_process_fields(about, peer_env):
  """The fields of a peer's line that say how it ran: what it said of itself (peer_process), in a
  process of its own, with the allocator's own settings unless peer_env (the environment it was
  started with) sets them."""
  return dict(about, process='own',
              malloc='environment' if host_memory.tuned_by_user(peer_env) else 'default')


def speed_ratios(seconds, ours='ours'):
  """{ours_over_PEER: ratio of median speeds, ours_over_PEER_rounds: [min, median, max] of the
  ratios within each round} from {impl: [seconds of its window in each round]}: the spread says
  how far the machine's noise moves the one ratio."""
  out = {}
  for peer, times in seconds.items():
    if peer == ours:
      continue
    out[f'{ours}_over_{peer}'] = round(statistics.median(times) / statistics.median(seconds[ours]), 3)
    rounds = sorted(t / o for t, o in zip(times, seconds[ours]))
    out[f'{ours}_over_{peer}_rounds'] = [round(r, 3) for r in
                                         (rounds[0], statistics.median(rounds), rounds[-1])]
  return out


def matmul_peak_flops(n=2048, repeats=5):
  """Measured fp32 matmul FLOP/s of the default JAX device (an n x n by n x n product)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n ** 3 / time_call(lambda: f(a).block_until_ready(), repeats)


def define_step_flags():
  """The flags of the programs that time the default model's train step (build_step)."""
  flags.DEFINE_integer('batch_size', 128, 'global batch')
  flags.DEFINE_integer('num_images', 10000, 'images resident on device to gather batches from')
  flags.DEFINE_float('noise_std', 0.1, 'input noise')
  flags.DEFINE_enum('conv_impl', 'auto', ['auto', 'flax'],
                    "the model's convolution form (model.conv_impl)")


def build_step(batch_size, num_images, noise_std, steps_per_jit, conv_impl='auto'):
  """The default model's jitted train function (its convolutions in model.conv_impl's form), its
  state, random uint8 images on the device and 4 index batches: (config, fn, state, images,
  idx_list)."""
  from ae import train  # pylint: disable=g-import-not-at-top
  from ae.augment import Augmentation  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.train.batch_size = batch_size
  config.model.conv_impl = conv_impl
  mesh = parallel.make_mesh()
  state = train.create_train_state(config, mesh, total_steps=10 ** 6)
  rng = np.random.default_rng(0)
  images = parallel.put(rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8),
                        parallel.replicated(mesh))
  fn = train.make_train_fn(mesh, 0, Augmentation(noise_std=noise_std))
  sharding = parallel.data_sharded(mesh, 2, 1)
  idx = [parallel.put(rng.integers(0, num_images, (steps_per_jit, batch_size), dtype=np.int32),
                      sharding) for _ in range(4)]
  return config, fn, state, images, idx
