"""Reference codes a learned 10-unit code should beat: PCA with as many components, raw pixels."""

import numpy as np


def flatten_float(images_u8):
  return images_u8.reshape(len(images_u8), -1).astype(np.float32) / 255.0


def fit_pca(x_NxF, dim):
  """(mean [F], components [F, dim]) from the eigenvectors of the covariance, largest first."""
  x = np.asarray(x_NxF, np.float32)
  mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
  cov = np.zeros((x.shape[1], x.shape[1]))
  for start in range(0, len(x), 10000):  # bounded memory for the centred copy
    c = x[start:start + 10000] - mean
    cov += c.T @ c  # a float32 GEMM per chunk (twice as fast as float64), summed in float64
  cov /= len(x)
  _, vecs = np.linalg.eigh(cov)
  return mean, vecs[:, ::-1][:, :dim].astype(np.float32)


def pca_encode(x_NxF, mean, components):
  return (x_NxF - mean) @ components


def pca_reconstruction_mse(x_NxF, mean, components):
  recon = pca_encode(x_NxF, mean, components) @ components.T + mean
  return float(np.mean((np.clip(recon, 0, 1) - x_NxF) ** 2))
