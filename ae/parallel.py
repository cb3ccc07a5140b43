"""One data-parallel mesh over every device of every process, and arrays placed on it.

The same code runs on 1 CPU, N fake CPU devices, a GPU box and a TPU pod slice:
parameters are replicated (P()), batches are split along 'data'.
"""

import functools
import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ae import host_memory


# Settings this project makes for JAX and XLA unless the environment has them already, measured
# with benchmarks/gpu_check.sh on one H200 (other backends ignore both):
# - Triton GEMM autotuning compiles dozens of kernel variants for every matmul fusion: it made the
#   default model's train step take 10.1 s to compile instead of 1.1 s (the test pass 8.4 s instead
#   of 0.5 s), for epochs that cuBLAS runs only about 5% slower.
# - Reserving 75% of the GPU's memory on its first use took 1.3-1.7 s of the start; this model
#   needs a few hundred MB, which the allocator then takes as it goes.
DEFAULT_XLA_FLAGS = ('--xla_gpu_enable_triton_gemm=false',)
DEFAULT_ENV = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}

# XLA:CPU hands every convolution op to YNNPACK by default; its own (Eigen) convolution runs this
# model's 2-3.5x as fast (at batch 1000 on 2 AVX-512 cores: the encoder forward 130 ms against 461
# ms with YNNPACK and 262 ms as patches). This is XLA's default set of YNNPACK fusions (jaxlib 0.10)
# less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION; tests/test_startup.py fails if a jaxlib's
# default list changes.
CONVOLUTIONS_OUTSIDE_YNNPACK = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}

# XLA options for the train step on CPU devices (step_compiler_options). Region-based live-range
# analysis in copy insertion (off by default on the CPU) proves that the Adam update may overwrite
# the kernels in place after the backward pass has read them, and drops the copies XLA otherwise
# makes of the seven weight matrices (36 MB a step) and of one noise-draw loop buffer: 61 copies ->
# 38, the default step 1.033x as fast side by side on 2 cores, the same losses to the bit, compile
# time unchanged (2.8 vs 3.0 s). The encoder's pooled convolutions are XLA convolutions there
# (model.conv_lowering 'xla'), kept out of YNNPACK.
CPU_STEP_COMPILER_OPTIONS = {'xla_cpu_copy_insertion_use_region_analysis': True,
                             **CONVOLUTIONS_OUTSIDE_YNNPACK}

# XLA options for the forward-only programs on CPU devices (inference_compiler_options): test MSE,
# encoding, reconstructions, queries. There the model's convolutions are XLA convolutions
# (model.conv_lowering 'xla_forward'), kept out of YNNPACK.
CPU_INFERENCE_COMPILER_OPTIONS = dict(CONVOLUTIONS_OUTSIDE_YNNPACK)


def set_runtime_defaults():
  """Adds DEFAULT_XLA_FLAGS to XLA_FLAGS (each unless XLA_FLAGS sets it) and DEFAULT_ENV to the
  environment (each unless set), and makes all threads allocate from one arena
  (host_memory.use_one_arena). JAX reads the variables when it starts its backends, and its
  threads take their allocator arena then, so this must run before the first computation or
  device query, and before any other thread allocates."""
  host_memory.use_one_arena()
  names = _xla_flags_set()
  flags = os.environ.get('XLA_FLAGS', '').split()
  flags += [f for f in DEFAULT_XLA_FLAGS if _flag_name(f) not in names]
  os.environ['XLA_FLAGS'] = ' '.join(flags)
  for name, value in DEFAULT_ENV.items():
    os.environ.setdefault(name, value)


def _flag_name(flag):
  """'--xla_foo=1' -> 'xla_foo'."""
  return flag.split('=')[0].lstrip('-')


def _xla_flags_set():
  """The names of the options the XLA_FLAGS environment variable sets."""
  return {_flag_name(f) for f in os.environ.get('XLA_FLAGS', '').split()}


@functools.cache
def _known_compiler_options(device, options):
  """The (name, value) pairs of these that this jaxlib accepts for device's backend (a tiny probe
  compile each, with the option's own value)."""
  known = []
  x = jax.device_put(np.float32(0), device)
  for name, value in options:
    try:
      jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(x).compile()
      known.append((name, value))
    except Exception as e:  # noqa: BLE001
      logging.warning('XLA option %s is not available here (%s); compiling without it.', name, e)
  return tuple(known)


def step_compiler_options(mesh):
  """XLA compile options for the train step on this mesh: CPU_STEP_COMPILER_OPTIONS on CPU devices,
  each unless XLA_FLAGS sets it and if this jaxlib knows it (an option a newer XLA dropped is
  skipped with a warning); none on other backends."""
  return _cpu_compiler_options(mesh, CPU_STEP_COMPILER_OPTIONS)


def inference_compiler_options(mesh):
  """The same for the forward-only programs (make_batched_fn): CPU_INFERENCE_COMPILER_OPTIONS."""
  return _cpu_compiler_options(mesh, CPU_INFERENCE_COMPILER_OPTIONS)


def _cpu_compiler_options(mesh, options):
  device = mesh.devices.flat[0]
  if device.platform != 'cpu':
    return {}
  in_env = _xla_flags_set()
  wanted = tuple((name, value) for name, value in options.items() if name not in in_env)
  return dict(_known_compiler_options(device, wanted))


def maybe_initialize_distributed():
  """Starts the JAX multi-controller runtime when the environment asks for several processes.

  Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID. Cluster launchers
  that JAX detects itself (SLURM, Cloud TPU, MPI) need only AE_DISTRIBUTED=1.
  """
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS') or env.get('AE_DISTRIBUTED') == '1':
    # CPU processes need a cross-process collectives backend; GPUs and TPUs ignore this.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if env.get('JAX_COORDINATOR_ADDRESS') and env.get('JAX_NUM_PROCESSES'):
    jax.distributed.initialize(
        coordinator_address=env['JAX_COORDINATOR_ADDRESS'],
        num_processes=int(env['JAX_NUM_PROCESSES']),
        process_id=int(env.get('JAX_PROCESS_ID', '0')))
  elif env.get('AE_DISTRIBUTED') == '1':
    jax.distributed.initialize()


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ('data',))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh, ndim=1, axis=0):
  """Splits dimension `axis` of an ndim array across the 'data' axis."""
  spec = [None] * ndim
  spec[axis] = 'data'
  return NamedSharding(mesh, P(*spec))


def put(x, sharding):
  """Places a host array that every process holds in full as one global array."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def log_devices():
  logging.info('JAX %s, backend %s: %d devices (%d local) in %d process(es), this is process %d: %s',
               jax.__version__, jax.default_backend(), jax.device_count(), jax.local_device_count(),
               jax.process_count(), jax.process_index(), jax.devices())
