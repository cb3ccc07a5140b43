"""The run's random streams, named in one place: which draw comes from which key.

Every key derives from config.seed by fold_in, never by split, so a draw depends only on its stream
and its step or image: a resumed run draws the same bits as an uninterrupted one, and an image's
evaluation noise is the same in any batch or process.
"""

import jax

# Streams of a run: stream(seed, NAME) = fold_in(key(seed), NAME).
INIT = 0  # the parameters' initialisation
TRAIN = 1  # train step s draws from fold_in(stream(seed, TRAIN), s): its step key
EVAL_NOISE = 2  # the evaluation's noisy copy of test image i: fold_in(stream(seed, EVAL_NOISE), i)
SAMPLES = 3  # the evaluation's draws from the Gaussian fitted to the codes (NumPy: [seed, SAMPLES])

# Within a train step: the step key itself draws the noise's normal values; the rest fold it.
FLIP = 1  # which images are mirrored (train.random_flip)
NOISE_STD = 2  # each image's noise std (train.random_noise_std)
SHIFT = 3  # each image's translation (train.random_shift)
DROPOUT = 4  # the encoder's dropout masks (model.encoder_dropout)


def stream(seed, name):
  """The key of stream `name` (one of the integers above) of a run seeded with `seed`."""
  return jax.random.fold_in(jax.random.key(seed), name)


def fold(key, name):
  """The key of a draw `name` within a step or image key."""
  return jax.random.fold_in(key, name)
