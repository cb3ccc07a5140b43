"""Retrieval metrics from neighbour labels: precision@k and mAP@k (relevant = same class)."""

import numpy as np

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
