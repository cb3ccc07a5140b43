"""Reference codes a learned 10-unit code should beat: PCA with as many components, raw pixels."""

import numpy as np
import scipy.linalg


def flatten_float(images_u8):
  """[N, ...] uint8 -> [N, F] float32 pixels / 255, in one pass (the values of astype then
  dividing, without the intermediate array)."""
  return np.divide(images_u8.reshape(len(images_u8), -1), np.float32(255), dtype=np.float32)


def fit_pca(x_NxF, dim):
  """(mean [F], components [F, dim]) from the eigenvectors of the covariance, largest first."""
  x = np.asarray(x_NxF, np.float32)
  mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
  cov = np.zeros((x.shape[1], x.shape[1]))
  for start in range(0, len(x), 10000):  # bounded memory for the centred copy
    c = x[start:start + 10000] - mean
    cov += c.T @ c  # a float32 GEMM per chunk (faster than float64), summed in float64
  cov /= len(x)
  f = cov.shape[0]
  # Only the dim largest eigenpairs (ascending): far cheaper than all 3072.
  _, vecs = scipy.linalg.eigh(cov, subset_by_index=[f - min(dim, f), f - 1])
  return mean, vecs[:, ::-1].astype(np.float32)


def pca_encode(x_NxF, mean, components):
  return (x_NxF - mean) @ components


def pca_reconstruction_mse(x_NxF, mean, components):
  recon = pca_encode(x_NxF, mean, components) @ components.T + mean
  return float(np.mean((np.clip(recon, 0, 1) - x_NxF) ** 2))
