import numpy as np
import pytest

from eval.retrieval import (average_precision_at_k, knn_accuracy, per_class, precision_at_k,
                            retrieval_metrics)


def test_precision_and_average_precision_by_hand():
  rel = np.array([[1, 0, 1, 0],   # P@1=1, P@2=1/2; AP@4 = (1/1 + 2/3) / 2 = 5/6
                  [0, 1, 1, 1],   # AP@4 = (1/2 + 2/3 + 3/4) / 3 = 23/36
                  [0, 0, 0, 0]],  # AP = 0
                 dtype=bool)
  assert precision_at_k(rel, 1) == pytest.approx(1 / 3)
  assert precision_at_k(rel, 2) == pytest.approx((1 + 1 + 0) / 6)
  assert precision_at_k(rel, 4) == pytest.approx((2 + 3 + 0) / 12)
  np.testing.assert_allclose(average_precision_at_k(rel, 4), [5 / 6, 23 / 36, 0])
  np.testing.assert_allclose(average_precision_at_k(rel, 2), [1, 1 / 2, 0])


def test_retrieval_metrics_on_a_toy_gallery():
  # 1-D codes: class 0 near 0, class 1 near 10; one class-1 item sits among class 0.
  gallery = np.array([[0], [1], [2], [10], [11], [1.5]], np.float32)
  labels = np.array([0, 0, 0, 1, 1, 1])
  queries = np.array([[0.1], [10.2]], np.float32)
  m = retrieval_metrics(queries, np.array([0, 1]), gallery, labels, 'euclidean', ks=(1, 3))
  # query 0 ranks 0, 1, 1.5(class 1) -> rel 1,1,0; query 1 ranks 10, 11, 2 -> rel 1,1,0
  assert m['P@1'] == 1.0
  assert m['P@3'] == pytest.approx(2 / 3)
  assert m['mAP@3'] == pytest.approx(1.0)


def test_knn_vote_by_hand_with_ties_going_to_the_nearest_tied_class():
  labels = np.array([[3, 1, 1, 3, 2],   # 3 and 1 tie with two votes: 3 is nearer
                     [0, 2, 2, 2, 0],   # 2 wins outright
                     [4, 5, 6, 7, 8]])  # all tie: the nearest, 4
  assert knn_accuracy(labels, np.array([3, 2, 4]), k=5) == 1.0
  assert knn_accuracy(labels, np.array([1, 0, 5]), k=5) == 0.0
  assert knn_accuracy(labels, np.array([1, 2, 4]), k=3) == pytest.approx(1.0)  # top 3: 1 wins


def test_per_class_precision_and_neighbour_shares_by_hand():
  labels = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1]])
  p, shares = per_class(labels, np.array([0, 0, 1]), num_classes=3, k=3)
  assert p[:2] == pytest.approx([0.5, 1.0]) and p[2] is None  # no query of class 2
  np.testing.assert_allclose(shares, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])


def test_map_at_1000_over_the_first_queries_is_theirs_and_the_rest_uses_every_query():
  from eval.retrieval import protocol_metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  q, g = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(1500, 3)).astype(np.float32)
  ql, gl = rng.integers(0, 4, 40), rng.integers(0, 4, 1500)
  subset, curve, labels = protocol_metrics(q, ql, g, gl, 'euclidean', map_queries=7)
  first, _, _ = protocol_metrics(q[:7], ql[:7], g, gl, 'euclidean', map_queries=0)
  assert subset['mAP@1000'] == pytest.approx(first['mAP@1000'])
  every = retrieval_metrics(q, ql, g, gl, 'euclidean')
  for key in ('P@1', 'P@10', 'P@100', 'mAP@100'):
    assert subset[key] == pytest.approx(every[key])
  assert labels.shape == (40, 100) and curve[9] == pytest.approx(every['P@10'])
  assert subset['knn_accuracy'] == knn_accuracy(labels, ql)
