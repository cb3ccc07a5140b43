"""A seeded 2-D UMAP projection of latent codes."""

import numpy as np


def umap_projection(z_NxD, labels, num_points, seed):
  """UMAP of num_points randomly chosen codes; returns (xy [n, 2], labels [n])."""
  import umap  # pylint: disable=g-import-not-at-top  (slow import: only when asked)
  rng = np.random.default_rng(seed)
  n = min(num_points, len(z_NxD))
  pick = np.sort(rng.choice(len(z_NxD), n, replace=False))
  reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1)
  return reducer.fit_transform(np.asarray(z_NxD)[pick]), np.asarray(labels)[pick]
