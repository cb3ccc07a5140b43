"""Retrieval metrics from neighbour labels: precision@k and mAP@k (relevant = same class)."""

import numpy as np
from absl import logging

from eval import references
from eval.codes import NUM_SHOWN
from eval.neighbors import nearest_neighbors

KS = (1, 10, 100)
MAP_K = 1000  # mAP over the top 1,000: the unsupervised-hashing protocol on CIFAR-10
KNN_K = 10  # neighbours in the kNN vote (the number self-supervised papers report)
CURVE_K = 100  # precision@k for k = 1..CURVE_K (figures/precision_curve.png)


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


def knn_accuracy(neighbour_labels_QxK, query_labels, k=KNN_K):
  """Top-1 accuracy of a k-neighbour majority vote; a tie goes to the class of the nearest of the
  tied neighbours."""
  lab = neighbour_labels_QxK[:, :k]
  votes = (lab[:, :, None] == lab[:, None, :]).sum(-1)  # [Q, k]: votes for neighbour j's class
  nearest_winner = np.argmax(votes == votes.max(axis=1, keepdims=True), axis=1)
  return float(np.mean(lab[np.arange(len(lab)), nearest_winner] == np.asarray(query_labels)))


def _neighbour_labels(query_z, gallery_z, gallery_labels, metric, k, exclude_self, nn_kwargs):
  _, idx = nearest_neighbors(query_z, gallery_z, min(k, len(gallery_z) - exclude_self), metric,
                             exclude_self=exclude_self, **nn_kwargs)
  return np.asarray(gallery_labels)[idx]


def retrieval_metrics(query_z, query_labels, gallery_z, gallery_labels, metric, ks=KS,
                      exclude_self=False, **nn_kwargs):
  """P@k for each k in ks and mAP@max(ks), for one metric."""
  k_max = max(ks)
  labels = _neighbour_labels(query_z, gallery_z, gallery_labels, metric, k_max, exclude_self,
                             nn_kwargs)
  return _precision_and_map(labels == np.asarray(query_labels)[:, None], ks)


def _precision_and_map(relevant_QxK, ks):
  """P@k for each k in ks and mAP@max(ks) (over the columns there are, if fewer)."""
  out = {f'P@{k}': precision_at_k(relevant_QxK, k) for k in ks}
  k_max = min(max(ks), relevant_QxK.shape[1])
  out[f'mAP@{max(ks)}'] = float(np.mean(average_precision_at_k(relevant_QxK, k_max)))
  return out


def protocol_metrics(query_z, query_labels, gallery_z, gallery_labels, metric, map_queries=0,
                     **nn_kwargs):
  """retrieval_metrics' numbers with the literature's: kNN accuracy, and mAP@1000 over the first
  map_queries queries (0: all), whose top-1,000 search costs several times a top-100's. Returns
  (numbers, the P@k curve for k = 1..CURVE_K, the neighbours' labels [Q, 100])."""
  q_labels = np.asarray(query_labels)
  n_map = min(map_queries or len(q_labels), len(q_labels))
  deep_for_all = n_map == len(q_labels)  # then one search serves every number
  labels = _neighbour_labels(query_z, gallery_z, gallery_labels, metric,
                             MAP_K if deep_for_all else max(KS), False, nn_kwargs)
  deep = labels if deep_for_all else _neighbour_labels(
      query_z[:n_map], gallery_z, gallery_labels, metric, MAP_K, False, nn_kwargs)
  relevant = labels[:, :max(KS)] == q_labels[:, None]
  out = _precision_and_map(relevant, KS)
  deep_relevant = deep == q_labels[:n_map, None]
  out[f'mAP@{MAP_K}'] = float(np.mean(average_precision_at_k(deep_relevant,
                                                             deep_relevant.shape[1])))
  out['knn_accuracy'] = knn_accuracy(labels, q_labels)
  k = min(CURVE_K, relevant.shape[1])
  curve = np.cumsum(relevant[:, :k].mean(axis=0)) / np.arange(1, k + 1)
  return out, curve.tolist(), labels[:, :max(KS)]


def per_class(neighbour_labels_QxK, query_labels, num_classes, k=10):
  """(P@k of each query class (None for a class with no query), [C, C] share of class j among
  the top k of class i's queries)."""
  lab, q = neighbour_labels_QxK[:, :k], np.asarray(query_labels)
  p_at_k, shares = [], np.zeros((num_classes, num_classes))
  for c in range(num_classes):
    mine = lab[q == c]
    p_at_k.append(float(np.mean(mine == c)) if len(mine) else None)  # no query of the class
    if len(mine):
      shares[c] = np.bincount(mine.ravel(), minlength=num_classes)[:num_classes] / mine.size
  return p_at_k, shares


def evaluate(inputs):
  """({'retrieval': P@k, mAP@100, mAP@1000 and kNN accuracy per metric of the test codes as
  queries over the training codes, 'retrieval_queries': their number, 'references': the same for
  PCA codes and raw pixels, 'retrieval_per_class': P@10 of each query class, 'neighbour_classes':
  the class shares among each query class's top 10, 'precision_curve': P@k, k = 1..100, of all
  three}, {'grids': each metric's (distances, indices) of the first test images' neighbours})."""
  e, ds, train_z = inputs.config.eval, inputs.ds, inputs.train_z
  n_q = e.retrieval_queries or len(ds.test_images)
  q_labels, num_classes = ds.test_labels[:n_q], len(ds.class_names)
  logging.info('eval: retrieval, %d test queries over %d training images', n_q, len(train_z))
  retrieval, curves, per_class_p10, shares = {}, {'model': {}}, {}, {}
  for m in e.metrics:
    retrieval[m], curves['model'][m], labels = protocol_metrics(
        inputs.test['z'][:n_q], q_labels, train_z, ds.train_labels, m, e.map_queries,
        **inputs.nn_kwargs)
    p10, share = per_class(labels, q_labels, num_classes)
    per_class_p10[m] = dict(zip(ds.class_names, p10))
    shares[m] = share.tolist()
  refs, curves['pca'], curves['raw_pixels'] = _references(inputs, n_q)
  k = min(e.k, len(train_z))
  grids = {m: nearest_neighbors(inputs.test['z'][:NUM_SHOWN], train_z, k, m, **inputs.nn_kwargs)
           for m in e.metrics}
  map_queries = min(e.map_queries or n_q, n_q)
  return {'retrieval': retrieval, 'retrieval_queries': n_q, 'map_queries': map_queries,
          'references': refs,
          'retrieval_per_class': per_class_p10, 'neighbour_classes': shares,
          'precision_curve': curves}, {'grids': grids}


def _references(inputs, n_q):
  """Retrieval of the same queries by PCA codes of the model's size (and PCA's test MSE), and by
  raw pixels (the first eval.reference_queries test queries: a 3072-D search is slow); returns
  (their numbers, PCA's P@k curves, raw pixels' P@k curves), curves per metric."""
  e, ds, dim = inputs.config.eval, inputs.ds, inputs.config.model.latent_dim
  logging.info('eval: PCA-%d and raw-pixel references', dim)
  x_train = references.flatten_float(ds.train_images)
  x_test = references.flatten_float(ds.test_images)
  mean, comps = references.fit_pca(x_train, dim)
  p_train, p_test = (references.pca_encode(x, mean, comps) for x in (x_train, x_test))
  n_raw = min(e.reference_queries or len(x_test), len(x_test))
  pca, raw, pca_curves, raw_curves = {}, {}, {}, {}
  for m in e.metrics:
    pca[m], pca_curves[m], _ = protocol_metrics(
        p_test[:n_q], ds.test_labels[:n_q], p_train, ds.train_labels, m, e.map_queries,
        **inputs.nn_kwargs)
    raw[m], raw_curves[m], _ = protocol_metrics(
        x_test[:n_raw], ds.test_labels[:n_raw], x_train, ds.train_labels, m, e.map_queries,
        **inputs.nn_kwargs)
  refs = {'pca': {'dim': dim, 'num_queries': n_q,
                  'test_mse': references.pca_reconstruction_mse(x_test, mean, comps), **pca},
          'raw_pixels': {'dim': int(x_train.shape[1]), 'num_queries': n_raw,
                         'map_queries': min(e.map_queries or n_raw, n_raw), **raw}}
  return refs, pca_curves, raw_curves
