"""Statistics of the latent codes."""

import numpy as np


def latent_stats(z_NxD):
  """Per-unit mean, std, min, max and the unit-by-unit correlation matrix."""
  z = np.asarray(z_NxD, np.float64)
  std = z.std(axis=0)
  safe = np.where(std > 0, std, 1.0)
  centred = (z - z.mean(axis=0)) / safe
  corr = centred.T @ centred / len(z)
  corr[:, std == 0] = 0.0
  corr[std == 0, :] = 0.0
  return {'mean': z.mean(axis=0).tolist(), 'std': std.tolist(), 'min': z.min(axis=0).tolist(),
          'max': z.max(axis=0).tolist(), 'corr': corr.tolist()}


def evaluate(inputs):
  """({'latent': latent_stats of the test codes}, {})."""
  return {'latent': latent_stats(inputs.test['z'])}, {}
