"""Retrieval metrics from neighbour labels: precision@k and mAP@k (relevant = same class)."""

import numpy as np
from absl import logging

from eval import references
from eval.codes import NUM_SHOWN
from eval.neighbors import nearest_neighbors

KS = (1, 10, 100)


def precision_at_k(relevant_QxK, k):
  """Mean over queries of the fraction of the first k neighbours that are relevant."""
  return float(np.mean(relevant_QxK[:, :k]))


def average_precision_at_k(relevant_QxK, k):
  """AP@k per query: the mean of precision@i over the ranks i <= k that hold a relevant item
  (0 when none does). mAP@k is its mean over queries."""
  rel = relevant_QxK[:, :k].astype(np.float64)
  hits = np.cumsum(rel, axis=1)
  prec_at_i = hits / np.arange(1, k + 1)
  n_rel = rel.sum(axis=1)
  return np.where(n_rel > 0, (prec_at_i * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)


def retrieval_metrics(query_z, query_labels, gallery_z, gallery_labels, metric, ks=KS,
                      exclude_self=False, **nn_kwargs):
  """P@k for each k in ks and mAP@max(ks), for one metric."""
  k_max = max(ks)
  _, idx = nearest_neighbors(query_z, gallery_z, k_max, metric, exclude_self=exclude_self,
                             **nn_kwargs)
  relevant = gallery_labels[idx] == np.asarray(query_labels)[:, None]
  out = {f'P@{k}': precision_at_k(relevant, k) for k in ks}
  out[f'mAP@{k_max}'] = float(np.mean(average_precision_at_k(relevant, k_max)))
  return out


def evaluate(inputs):
  """({'retrieval': P@k and mAP@100 per metric of the test codes as queries over the training
  codes, 'retrieval_queries': their number, 'references': the same for PCA codes and raw
  pixels}, {'grids': each metric's (distances, indices) of the first test images' neighbours})."""
  e, ds, train_z = inputs.config.eval, inputs.ds, inputs.train_z
  n_q = e.retrieval_queries or len(ds.test_images)
  q_labels = ds.test_labels[:n_q]
  logging.info('eval: retrieval, %d test queries over %d training images', n_q, len(train_z))
  retrieval = {m: retrieval_metrics(inputs.test['z'][:n_q], q_labels, train_z, ds.train_labels, m,
                                    **inputs.nn_kwargs) for m in e.metrics}
  refs = _references(inputs, n_q)
  k = min(e.k, len(train_z))
  grids = {m: nearest_neighbors(inputs.test['z'][:NUM_SHOWN], train_z, k, m, **inputs.nn_kwargs)
           for m in e.metrics}
  return {'retrieval': retrieval, 'retrieval_queries': n_q, 'references': refs}, {'grids': grids}


def _references(inputs, n_q):
  """Retrieval of the same queries by PCA codes of the model's size (and PCA's test MSE), and by
  raw pixels (the first eval.reference_queries test queries: a 3072-D search is slow)."""
  e, ds, dim = inputs.config.eval, inputs.ds, inputs.config.model.latent_dim
  logging.info('eval: PCA-%d and raw-pixel references', dim)
  x_train = references.flatten_float(ds.train_images)
  x_test = references.flatten_float(ds.test_images)
  mean, comps = references.fit_pca(x_train, dim)
  p_train, p_test = (references.pca_encode(x, mean, comps) for x in (x_train, x_test))
  n_raw = min(e.reference_queries or len(x_test), len(x_test))
  pca = {m: retrieval_metrics(p_test[:n_q], ds.test_labels[:n_q], p_train, ds.train_labels, m,
                              **inputs.nn_kwargs) for m in e.metrics}
  raw = {m: retrieval_metrics(x_test[:n_raw], ds.test_labels[:n_raw], x_train, ds.train_labels, m,
                              query_chunk=256, gallery_chunk=2048, mesh=inputs.mesh)
         for m in e.metrics}
  return {'pca': {'dim': dim, 'num_queries': n_q,
                  'test_mse': references.pca_reconstruction_mse(x_test, mean, comps), **pca},
          'raw_pixels': {'dim': int(x_train.shape[1]), 'num_queries': n_raw, **raw}}
