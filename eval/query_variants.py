"""Retrieval in the original report's other settings: noisy test images as queries, and its own
small gallery."""

import numpy as np

from eval.codes import NUM_SHOWN
from eval.neighbors import nearest_neighbors
from eval.retrieval import retrieval_metrics

SEED_GALLERY = 500  # the original report's setting: first 500 train + first 500 test images


def evaluate(inputs):
  """({'noisy_queries': P@10 per metric of the noisy test images' codes over the training codes,
  'seed_setting': P@k of the report's first queries in its gallery}, {'seed_neighbors': their
  neighbours per metric, for the figure})."""
  e, ds, test_z = inputs.config.eval, inputs.ds, inputs.test['z']
  n_q = e.retrieval_queries or len(ds.test_images)
  noisy = {m: retrieval_metrics(inputs.test['z_noisy'][:n_q], ds.test_labels[:n_q], inputs.train_z,
                                ds.train_labels, m, ks=(10,), **inputs.nn_kwargs)
           for m in e.metrics}
  # The gallery is the first 500 train + first 500 test codes, the queries its first 10.
  z = np.concatenate([inputs.train_z[:SEED_GALLERY], test_z[:SEED_GALLERY]])
  labels = seed_gallery(ds)[1]
  n_q, k = min(NUM_SHOWN, len(z) - 1), min(e.k, len(z) - 1)
  neighbors = {m: nearest_neighbors(z, z, k, m, exclude_self=True, **inputs.nn_kwargs)[1][:n_q]
               for m in e.metrics}
  seed = {m: {f'P@{k}': float(np.mean(labels[i] == labels[:n_q, None]))}
          for m, i in neighbors.items()}
  return {'noisy_queries': noisy, 'seed_setting': seed}, {'seed_neighbors': neighbors}


def seed_gallery(ds):
  """The images and labels of the original report's gallery."""
  return (np.concatenate([ds.train_images[:SEED_GALLERY], ds.test_images[:SEED_GALLERY]]),
          np.concatenate([ds.train_labels[:SEED_GALLERY], ds.test_labels[:SEED_GALLERY]]))
