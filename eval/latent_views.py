"""What the code holds, decoded: each unit swept alone, the line between two images' codes, and
draws from a Gaussian fitted to the training codes.

The retrieval numbers say how well the code groups images; these views show what each unit and
region of the code space looks like through the decoder.
"""

import jax
import numpy as np
from absl import logging

from ae import rng
from ae.data import to_float

TRAVERSAL_STEPS = 9  # decodings per unit, from its 2nd to its 98th test percentile
PAIRS = 6  # test image pairs (0, 1), (2, 3), ... interpolated
INTERPOLATION_STEPS = 8  # points on each line, both ends included
SAMPLES = 32  # draws from the fitted Gaussian


def traversal_codes(z_NxD, steps=TRAVERSAL_STEPS):
  """[D, steps, D]: the mean code with unit d swept evenly over its 2nd-98th percentile in row d."""
  mean = z_NxD.mean(axis=0)
  lo, hi = np.percentile(z_NxD, [2, 98], axis=0)
  d = z_NxD.shape[1]
  codes = np.broadcast_to(mean, (d, steps, d)).copy()
  for unit in range(d):
    codes[unit, :, unit] = np.linspace(lo[unit], hi[unit], steps)
  return codes.astype(np.float32)


def interpolation_weights(steps=INTERPOLATION_STEPS):
  """[steps] evenly spaced in [0, 1]: 0 is the first image of a pair, 1 the second."""
  return np.linspace(0.0, 1.0, steps, dtype=np.float32)


def interpolation_codes(z_a_PxD, z_b_PxD, steps=INTERPOLATION_STEPS):
  """[P, steps, D]: evenly spaced points on the line from each a to its b."""
  t = interpolation_weights(steps)[None, :, None]
  return (1 - t) * z_a_PxD[:, None] + t * z_b_PxD[:, None]


def crossfade(x_a_PxHxWxC, x_b_PxHxWxC, steps=INTERPOLATION_STEPS):
  """[P, steps, H, W, C]: the pixel-space blend of each pair at the same weights."""
  t = interpolation_weights(steps).reshape(1, steps, 1, 1, 1)
  return (1 - t) * x_a_PxHxWxC[:, None] + t * x_b_PxHxWxC[:, None]


def gaussian_samples(z_NxD, n, seed):
  """n codes drawn from the full-covariance Gaussian fitted to z (maximum likelihood)."""
  z = np.asarray(z_NxD, np.float64)
  cov = np.cov(z, rowvar=False, bias=True)
  draws = np.random.default_rng([seed, rng.SAMPLES]).multivariate_normal(z.mean(0), cov, n)
  return draws.astype(np.float32)


def evaluate(inputs):
  """({}, {'traversals': (images [D, steps, ...], each unit's test std), 'interpolations':
  (decoded [P, steps, ...], crossfaded [P, steps, ...]), 'samples': images [SAMPLES, ...]})."""
  z_test, ds = inputs.test['z'], inputs.ds
  logging.info('eval: traversals, interpolations and samples of the %d-unit code', z_test.shape[1])
  pairs = min(PAIRS, len(z_test) // 2)
  travel = traversal_codes(z_test)
  between = interpolation_codes(z_test[0:2 * pairs:2], z_test[1:2 * pairs:2])
  drawn = gaussian_samples(inputs.train_z, SAMPLES, inputs.config.seed)
  codes = np.concatenate([travel.reshape(-1, travel.shape[-1]),
                          between.reshape(-1, between.shape[-1]), drawn])
  model = inputs.model
  images = np.asarray(jax.jit(lambda p, z: model.apply(p, z, method=model.decode))(
      inputs.params, codes))
  n_travel, n_between = travel.shape[0] * travel.shape[1], between.shape[0] * between.shape[1]
  x = to_float(ds.test_images[:2 * pairs])
  return {}, {
      'traversals': (images[:n_travel].reshape(travel.shape[:2] + images.shape[1:]),
                     z_test.std(axis=0)),
      'interpolations': (images[n_travel:n_travel + n_between].reshape(
          between.shape[:2] + images.shape[1:]), crossfade(x[0::2], x[1::2])),
      'samples': images[n_travel + n_between:]}
