"""Settings for GPU backends, made unless the environment has them (other backends ignore both).

- Triton GEMM autotuning compiles dozens of kernel variants for every matrix-product fusion:
  seconds of compilation per program, for epochs that cuBLAS runs about as fast.
- Reserving 75% of the GPU's memory at its first use takes over a second of every start; this
  model needs a few hundred MB, which the allocator then takes as it goes.

Measured with benchmarks/gpu_check.sh on one H200 (benchmarks/RESULTS.md).
"""

import os

from ae.xla_flags import flag_name, names_set

DEFAULT_XLA_FLAGS = ('--xla_gpu_enable_triton_gemm=false',)
DEFAULT_ENV = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}


def set_defaults():
  """Adds DEFAULT_XLA_FLAGS to XLA_FLAGS (each unless XLA_FLAGS sets it) and DEFAULT_ENV to the
  environment (each unless set); JAX reads both when it starts its backends."""
  names = names_set()
  flags = os.environ.get('XLA_FLAGS', '').split()
  flags += [f for f in DEFAULT_XLA_FLAGS if flag_name(f) not in names]
  os.environ['XLA_FLAGS'] = ' '.join(flags)
  for name, value in DEFAULT_ENV.items():
    os.environ.setdefault(name, value)
