"""PCA reference against a float64 NumPy SVD."""

import numpy as np

from eval import references


def test_pca_matches_a_float64_svd():
  rng = np.random.default_rng(0)
  scales = np.linspace(3.0, 0.1, 40)  # distinct variances: well-defined components
  x = (rng.normal(size=(25000, 40)) * scales + 0.5).astype(np.float32)
  mean, comps = references.fit_pca(x, 5)
  x64 = x.astype(np.float64)
  _, _, vt = np.linalg.svd(x64 - x64.mean(0), full_matrices=False)
  np.testing.assert_allclose(mean, x64.mean(0), atol=1e-5)
  # the same directions up to sign, largest first
  np.testing.assert_allclose(np.abs(np.sum(comps * vt[:5].T, axis=0)), 1.0, atol=1e-4)
  codes = references.pca_encode(x, mean, comps)
  np.testing.assert_allclose(codes, (x64 - x64.mean(0)) @ (vt[:5].T * np.sign(np.sum(comps * vt[:5].T, 0))),
                             atol=1e-3)


def test_flatten_float_gives_the_pixels_over_255():
  images = np.random.default_rng(1).integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
  flat = references.flatten_float(images)
  assert flat.dtype == np.float32 and flat.shape == (7, 60)
  np.testing.assert_array_equal(flat, images.reshape(7, -1).astype(np.float32) / np.float32(255))


def test_pca_asked_for_more_components_than_features_returns_them_all():
  x = np.random.default_rng(2).normal(size=(100, 6)).astype(np.float32)
  mean, comps = references.fit_pca(x, 10)
  assert comps.shape == (6, 6)
  np.testing.assert_allclose(comps.T @ comps, np.eye(6), atol=1e-5)
