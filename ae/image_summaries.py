"""Reconstructions of a few fixed test images as TensorBoard images, at the end of every epoch.

So that a researcher watches them sharpen in TensorBoard's Images tab: the first NUM_IMAGES test
images over their reconstructions ('reconstructions/test') and, when the run trains on noise,
their noisy copies (the evaluation's noise draws, at train.noise_std) over the reconstructions of
those ('reconstructions/noisy_test').
"""

import numpy as np

from ae import inference, rng
from ae.augment import noisy_copies

NUM_IMAGES = 8


def to_uint8(images):
  """Float images in [0, 1] to uint8 pixels, rounded."""
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(rows):
  """One uint8 image [R * H, N * W, C] of R rows of N float images [N, H, W, C] each."""
  return to_uint8(np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0))


class ReconstructionImages:
  """The jitted reconstruction of the fixed images, and the summaries made of it."""

  def __init__(self, config, mesh, apply_fn, num_test):
    self.mesh, self.num = mesh, min(NUM_IMAGES, num_test)
    noise_std, noise_key = config.train.noise_std, rng.stream(config.seed, rng.EVAL_NOISE)

    def reconstruction_images(params, x, idx):
      out = {'test': (x, apply_fn(params, x))}
      if noise_std:
        noisy_x = noisy_copies(x, idx, noise_key, noise_std)
        out['noisy_test'] = (noisy_x, apply_fn(params, noisy_x))
      return out

    self.fn = inference.make_batched_fn(mesh, reconstruction_images)

  def write(self, log, params, test_images, step):
    """Adds the grids of step's parameters to log (a MetricsLog); every process computes them."""
    out = inference.apply_in_batches(self.mesh, self.fn, params, test_images, self.num, self.num)
    for name, rows in out.items():
      log.image(f'reconstructions/{name}', image_grid(rows), step)
