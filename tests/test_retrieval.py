import numpy as np
import pytest

from eval.retrieval import average_precision_at_k, precision_at_k, retrieval_metrics


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
