"""XLA compile options for the train step and the forward-only programs on CPU devices.

- Convolutions outside YNNPACK: XLA:CPU hands every convolution to YNNPACK by default; its own
  (Eigen) convolution runs this model's faster. The value is XLA's default set of YNNPACK fusion
  types (jaxlib 0.10) less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION; a test fails if a jaxlib's
  default list changes.
- Region-based live-range analysis in copy insertion (off by default on the CPU): it proves that
  the Adam update may overwrite the kernels in place after the backward pass has read them, and
  drops the copies XLA otherwise makes of every weight matrix each step.

Each option applies unless XLA_FLAGS sets it, and only if this jaxlib knows it (one a newer XLA
dropped is skipped with a warning). Other backends get none.
"""

import functools

import jax
import numpy as np
from absl import logging

from ae import xla_flags

CONVOLUTIONS_OUTSIDE_YNNPACK = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
TRAIN_STEP = {'xla_cpu_copy_insertion_use_region_analysis': True, **CONVOLUTIONS_OUTSIDE_YNNPACK}
INFERENCE = dict(CONVOLUTIONS_OUTSIDE_YNNPACK)


def for_train_step(mesh):
  """TRAIN_STEP's options for a step compiled on this mesh (none off CPU devices)."""
  return _for_mesh(mesh, TRAIN_STEP)


def for_inference(mesh):
  """INFERENCE's options for a forward-only program compiled on this mesh."""
  return _for_mesh(mesh, INFERENCE)


def _for_mesh(mesh, options):
  device = mesh.devices.flat[0]
  if device.platform != 'cpu':
    return {}
  in_env = xla_flags.names_set()
  wanted = tuple((name, value) for name, value in options.items() if name not in in_env)
  return dict(_known(device, wanted))


@functools.cache
def _known(device, options):
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
