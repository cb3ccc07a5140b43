"""Codes refined per image through the fixed decoder (iterative inference).

The encoder maps an image to its code in one pass; the code from which the decoder reconstructs
the image best usually lies a little elsewhere (the amortisation gap). `eval.refine_steps` Adam
steps on each image's own reconstruction error, starting from the encoder's code, close part of
that gap: the code keeps its `latent_dim` units and the decoder is unchanged. An image keeps the
encoder's code if refining did not lower its error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from ae.inference import apply_in_batches, make_batched_fn
from eval.codes import NUM_SHOWN
from eval.reconstruction import psnr


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


def evaluate(inputs):
  """({'refined': the refined codes' test MSE and PSNR, and the share of images they improved},
  {'test_z_refined': the codes, 'refined_shown': the first test images' reconstructions}), or
  nothing when eval.refine_steps is 0."""
  e, model, params = inputs.config.eval, inputs.model, inputs.params
  if not e.refine_steps:
    return {}, {}
  n_test = len(inputs.ds.test_images)
  logging.info('eval: refining %d test codes, %d Adam steps each through the decoder', n_test,
               e.refine_steps)
  refined = apply_in_batches(inputs.mesh, make_refine_fn(inputs.mesh, model, e.refine_steps,
                                                         e.refine_lr),
                             params, inputs.test_dev, n_test, inputs.config.train.eval_batch_size)
  mse = float(refined['sse'].sum() / (n_test * np.prod(inputs.ds.test_images.shape[1:])))
  numbers = {'steps': e.refine_steps, 'lr': e.refine_lr, 'test_mse': mse, 'psnr': psnr(mse),
             'improved_fraction': float(np.mean(refined['sse'] < refined['sse_encoder']))}
  decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
  shown = np.asarray(decode(params, refined['z'][:NUM_SHOWN]))
  return {'refined': numbers}, {'test_z_refined': refined['z'], 'refined_shown': shown}
