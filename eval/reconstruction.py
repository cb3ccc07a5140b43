"""How well the test images come back: MSE and PSNR, clean and from noisy inputs (denoising)."""

import numpy as np


def psnr(mse):
  """Peak signal-to-noise ratio in dB of a mean squared error of pixels in [0, 1]."""
  return float(10 * np.log10(1.0 / mse)) if mse > 0 else float('inf')


def evaluate(inputs):
  """({'test': MSE and PSNR, 'denoising': the three MSEs against the clean images}, {})."""
  test = inputs.test
  pixels = len(test['sse_recon']) * np.prod(inputs.ds.test_images.shape[1:])
  mse = float(test['sse_recon'].sum() / pixels)
  return {'test': {'mse': mse, 'psnr': psnr(mse)},
          'denoising': {
              'noise_std': inputs.config.eval.noise_std,
              'mse_noisy_vs_clean': float(test['sse_noisy_input'].sum() / pixels),
              'mse_recon_noisy_vs_clean': float(test['sse_recon_noisy'].sum() / pixels),
              'mse_recon_clean_vs_clean': mse}}, {}
