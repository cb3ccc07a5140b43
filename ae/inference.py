"""Batched inference: a jitted function of the parameters and a batch of images, run over a
device-resident image set in fixed-size index batches (one compilation for any set size)."""

import jax
import jax.numpy as jnp
import numpy as np

from ae import parallel
from ae.cpu import compiler_options
from ae.data import to_float


def make_batched_fn(mesh, fn):
  """Jits fn(params, batch_float, idx_B) -> per-example outputs on index batches, replicated."""
  batch_sharding = parallel.data_sharded(mesh, ndim=4)

  def apply(params, images_u8, idx_B):
    batch = jax.lax.with_sharding_constraint(images_u8[idx_B], batch_sharding)
    return fn(params, to_float(batch), idx_B)

  apply.__name__ = f'apply_{getattr(fn, "__name__", "fn")}'  # names the program in compile logs
  return jax.jit(apply, out_shardings=parallel.replicated(mesh),
                 compiler_options=compiler_options.for_inference(mesh))


def device_batch(batch_size, mesh):
  """batch_size rounded up to a multiple of the mesh's devices: the index batch apply_in_batches
  passes to a make_batched_fn function."""
  return -(-batch_size // mesh.size) * mesh.size


def apply_in_batches(mesh, jitted, params, images_u8, num, batch_size):
  """Runs a make_batched_fn function over the first num images; returns host arrays."""
  batch_size = device_batch(batch_size, mesh)
  outs = []
  for start in range(0, num, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = int(np.sum(idx < num))
    idx = np.minimum(idx, num - 1).astype(np.int32)  # pad with the last image; dropped below
    out = jitted(params, images_u8, parallel.put(idx, parallel.data_sharded(mesh)))
    outs.append(jax.tree.map(lambda o, v=valid: np.asarray(o)[:v], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def per_image_sse(apply_fn):
  """fn for make_batched_fn: each image's summed squared reconstruction error."""
  def per_image_sse(params, x, idx_B):
    del idx_B
    return jnp.sum(jnp.square(apply_fn(params, x) - x), axis=(1, 2, 3))
  return per_image_sse


def mean_squared_error(mesh, sse_fn, params, images_u8, num, batch_size):
  """The reconstruction MSE over the first num images, from a per_image_sse function."""
  sse = apply_in_batches(mesh, sse_fn, params, images_u8, num, batch_size)
  return float(np.sum(sse) / (sse.size * np.prod(images_u8.shape[1:])))
