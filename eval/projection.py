"""A seeded 2-D UMAP projection of latent codes."""

import warnings

import numpy as np
from absl import logging

from eval.neighbors import nearest_neighbors

N_NEIGHBORS = 15  # UMAP's default


def exact_knn_graph(x_NxD, k):
  """(indices, distances) [N, k] of each row's k nearest rows by Euclidean distance, itself first
  at distance 0 (the layout UMAP's own neighbour search returns)."""
  n = len(x_NxD)
  d, i = nearest_neighbors(x_NxD, x_NxD, k - 1, 'euclidean', exclude_self=True)
  return (np.concatenate([np.arange(n, dtype=i.dtype)[:, None], i], axis=1),
          np.concatenate([np.zeros((n, 1), d.dtype), d], axis=1))


def umap_projection(z_NxD, labels, num_points, seed):
  """UMAP of num_points randomly chosen codes; returns (xy [n, 2], labels [n]).

  UMAP gets the exact 15-nearest-neighbour graph from our search instead of running its own
  approximate one (NN-descent), whose numba compilation took most of the projection's time.
  """
  import umap  # pylint: disable=g-import-not-at-top  (slow import: only when asked)
  rng = np.random.default_rng(seed)
  n = min(num_points, len(z_NxD))
  if n < 3:
    raise ValueError(f'UMAP needs at least 3 points, got {n}: raise eval.umap_points '
                     'or set it to 0 to skip the projection')
  pick = np.sort(rng.choice(len(z_NxD), n, replace=False))
  x = np.asarray(z_NxD, np.float32)[pick]
  k = min(N_NEIGHBORS, n - 1)
  knn_i, knn_d = exact_knn_graph(x, k)
  reducer = umap.UMAP(n_components=2, n_neighbors=k, random_state=seed, n_jobs=1,
                      precomputed_knn=(knn_i, knn_d, None))
  with warnings.catch_warnings():  # we never call reducer.transform, which would need its index
    warnings.filterwarnings('ignore', message='.*knn_search_index.*')
    return reducer.fit_transform(x), np.asarray(labels)[pick]


def evaluate(inputs):
  """({}, {'umap': (xy, labels)} of eval.umap_points test codes), or nothing for 0 points."""
  n = inputs.config.eval.umap_points
  if not n:
    return {}, {}
  logging.info('eval: UMAP of %d test codes', min(n, len(inputs.test['z'])))
  return {}, {'umap': umap_projection(inputs.test['z'], inputs.ds.test_labels, n,
                                      inputs.config.seed)}
