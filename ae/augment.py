"""What a train step does to its clean batch before the model sees it: flips, shifts, noise.

Input and target get the same flips and shifts; only the input gets the noise, so the model
learns to reconstruct the clean image (denoising).
"""

import dataclasses

import jax
import jax.numpy as jnp

from ae import rng


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The train config's augmentations (static: each combination compiles its own step)."""
  noise_std: float = 0.0  # Gaussian noise on the input, clipped to [0, 1]
  random_std: bool = False  # each image's std uniform in [0, noise_std] instead
  flip: bool = False  # mirror each image left-right with probability 1/2
  shift: int = 0  # translate each image by up to this many pixels per axis

  @classmethod
  def from_config(cls, train_config):
    t = train_config
    return cls(t.noise_std, t.random_noise_std, t.random_flip, t.random_shift)

  def __call__(self, clean, key):
    """(target, input) of a float batch, from the step key (ae/rng.py names its draws)."""
    if self.flip:
      clean = random_flip(clean, rng.fold(key, rng.FLIP))
    if self.shift:
      clean = random_shift(clean, rng.fold(key, rng.SHIFT), self.shift)
    return clean, add_noise(clean, key, self.noise_std, self.random_std)


def add_noise(clean, key, noise_std, random_std=False):
  """Gaussian noise clipped to [0, 1], as the original report's add_noise_and_clip_data.

  With random_std, each image's std is drawn uniformly from [0, noise_std], so the model sees
  clean to fully noisy inputs (the same key gives the same normal draws either way).
  """
  if noise_std == 0:
    return clean
  std = noise_std
  if random_std:
    std = noise_std * jax.random.uniform(rng.fold(key, rng.NOISE_STD), (clean.shape[0], 1, 1, 1),
                                         clean.dtype)
  return jnp.clip(clean + std * jax.random.normal(key, clean.shape, clean.dtype), 0.0, 1.0)


def noisy_copies(x, idx, noise_key, noise_std):
  """The evaluation's noisy copies of images (rng.EVAL_NOISE), each drawn from its index: the
  same for an image in any batch or process."""
  keys = jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(idx)
  return jax.vmap(lambda k, xi: add_noise(xi, k, noise_std))(keys, x)


def random_flip(images, key):
  """Mirrors each image left-right with probability 1/2 (an augmentation the test set shares)."""
  flip_B = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip_B[:, None, None, None], images[:, :, ::-1], images)


def random_shift(images, key, max_shift):
  """Translates each image by its own uniform offset in [-max_shift, max_shift] pixels along each
  axis, filling the uncovered border by reflection (a crop of the reflect-padded image)."""
  n, h, w, c = images.shape
  s = max_shift
  padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode='reflect')
  offsets_N2 = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets_N2)
