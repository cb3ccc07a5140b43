"""One data-parallel mesh over every device of every process, and arrays placed on it.

The same code runs on 1 CPU, N fake CPU devices, a GPU box and a TPU pod slice: parameters are
replicated (P()), batches are split along 'data'.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ('data',))


def platform(mesh):
  """'cpu', 'gpu' or 'tpu': the mesh's devices' platform (the convolution form follows it)."""
  return mesh.devices.flat[0].platform


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
