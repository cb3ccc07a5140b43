"""One data-parallel mesh over every device of every process, and arrays placed on it.

The same code runs on 1 CPU, N fake CPU devices, a GPU box and a TPU pod slice:
parameters are replicated (P()), batches are split along 'data'.
"""

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


def set_runtime_defaults():
  """Adds DEFAULT_XLA_FLAGS to XLA_FLAGS (each unless XLA_FLAGS sets it) and DEFAULT_ENV to the
  environment (each unless set), and makes all threads allocate from one arena
  (host_memory.use_one_arena). JAX reads the variables when it starts its backends, and its
  threads take their allocator arena then, so this must run before the first computation or
  device query, and before any other thread allocates."""
  host_memory.use_one_arena()
  flags = os.environ.get('XLA_FLAGS', '').split()
  names = {f.split('=')[0] for f in flags}
  flags += [f for f in DEFAULT_XLA_FLAGS if f.split('=')[0] not in names]
  os.environ['XLA_FLAGS'] = ' '.join(flags)
  for name, value in DEFAULT_ENV.items():
    os.environ.setdefault(name, value)


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
