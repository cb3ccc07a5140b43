"""Codes refined per image through the fixed decoder (iterative inference).

The encoder maps an image to its code in one pass; the code from which the decoder reconstructs
the image best usually lies a little elsewhere (the amortisation gap). `eval.refine_steps` Adam
steps on each image's own reconstruction error, starting from the encoder's code, close part of
that gap: the code keeps its `latent_dim` units and the decoder is unchanged. An image keeps the
encoder's code if refining did not lower its error.
"""

import jax
import jax.numpy as jnp
import optax

from ae.train import make_batched_fn


def refine_codes(model, params, x, steps, lr):
  """Returns (codes, per-image SSE of their reconstructions, per-image SSE of the encoder's)."""
  z0 = model.apply(params, x, method=model.encode)

  def sse(z):
    return jnp.sum(jnp.square(model.apply(params, z, method=model.decode) - x), axis=(1, 2, 3))

  tx = optax.adam(lr)

  def step(carry, _):
    z, opt = carry
    # Image i's error depends on code i alone, and Adam is elementwise: each code follows its own
    # trajectory whatever else is in the batch.
    u, opt = tx.update(jax.grad(lambda z: jnp.sum(sse(z)))(z), opt)
    return (optax.apply_updates(z, u), opt), None

  (z, _), _ = jax.lax.scan(step, (z0, tx.init(z0)), None, length=steps)
  e0, e = sse(z0), sse(z)
  better = e < e0
  return jnp.where(better[:, None], z, z0), jnp.where(better, e, e0), e0


def make_refine_fn(mesh, model, steps, lr):
  """The jitted batch function for apply_in_batches: {'z', 'sse', 'sse_encoder'} per image."""
  def fn(params, x, idx):
    del idx
    z, e, e0 = refine_codes(model, params, x, steps, lr)
    return {'z': z, 'sse': e, 'sse_encoder': e0}
  return make_batched_fn(mesh, fn)
