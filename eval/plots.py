"""Figures, drawn from arrays and dicts computed elsewhere."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  return path


def save_loss_curves(records, path):
  """Train loss and test MSE per epoch (the seed's Figure 3), from metrics.jsonl records."""
  epochs = {}
  for r in records:
    if 'test/mse' in r:
      epochs[r['epoch']] = r
  xs = sorted(epochs)
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(xs, [epochs[e]['train/epoch_loss'] for e in xs], 'o-', label='train loss (MSE)')
  ax.plot(xs, [epochs[e]['test/mse'] for e in xs], 's-', label='test MSE')
  steps = [r for r in records if 'train/loss' in r]
  if steps:
    per_epoch = max(r['step'] / r['epoch'] for r in steps if r['epoch'])
    ax.plot([r['step'] / per_epoch for r in steps], [r['train/loss'] for r in steps],
            color='0.7', lw=0.8, zorder=0, label='train loss (per log interval)')
  ax.set_xlabel('epoch')
  ax.set_ylabel('mean squared error')
  ax.set_title('Training curves')
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)
