"""The figures of a run, drawn after every number is computed (eval/plots.py draws each kind)."""

import os

import jax
import numpy as np

from ae.metrics_log import read_records
from eval import plots
from eval.codes import NUM_SHOWN
from eval.query_variants import seed_gallery


def plot_training(workdir):
  """figures/loss.png: the training curves from metrics.jsonl (process 0)."""
  if jax.process_index() == 0:
    plots.save_loss_curves(read_records(os.path.join(workdir, 'metrics.jsonl')),
                           os.path.join(workdir, 'figures', 'loss.png'))


def draw(workdir, inputs, results, arrays):
  """Draws every figure into workdir/figures; returns {name: path relative to workdir}."""
  e, ds, shown = inputs.config.eval, inputs.ds, inputs.shown
  path = lambda name: os.path.join(workdir, 'figures', f'{name}.png')
  test_images = ds.test_images[:NUM_SHOWN]
  rows, row_names = [test_images, shown['recon']], ['test image', 'reconstruction']
  title = (f'First {len(test_images)} test images and their reconstructions '
           f"(test MSE {results['test']['mse']:.4f})")
  if 'refined' in results:
    rows.append(arrays['refined_shown'])
    row_names.append(f'refined code ({e.refine_steps} steps)')
    title += f"; refined codes {results['refined']['test_mse']:.4f}"
  z = inputs.test['z']
  figures = {
      'loss': path('loss'),
      'reconstructions': plots.save_image_rows(rows, row_names, path('reconstructions'), title),
      'latent_values': plots.save_latent_values(z, inputs.config.seed, path('latent_values')),
      'latent_histograms': plots.save_latent_histograms(z, path('latent_histograms')),
      'latent_correlation': plots.save_correlation(np.array(results['latent']['corr']),
                                                   path('latent_correlation')),
      'precision': plots.save_precision_comparison(results, path('precision_at_k')),
      'precision_curve': plots.save_precision_curve(
          results['precision_curve'], results['references']['pca']['dim'],
          path('precision_curve')),
      'neighbour_classes': plots.save_neighbour_classes(
          results['neighbour_classes'], ds.class_names, path('neighbour_classes')),
      'denoising': plots.save_image_rows(
          [test_images, shown['noisy'], shown['recon_noisy']],
          ['clean', f'noisy (std {e.noise_std:g})', 'reconstruction'], path('denoising'),
          'Noisy test images and their reconstructions'),
      'seed_setting': plots.save_seed_setting(*seed_gallery(ds), arrays['seed_neighbors'],
                                              path('seed_setting')),
  }
  for m, (d, i) in arrays['grids'].items():
    figures[f'query_{m}'] = plots.save_query_grid(
        test_images, ds.test_labels[:NUM_SHOWN], ds.train_images, ds.train_labels, i, d,
        ds.class_names, path(f'query_{m}'), f'{m} distance in latent space')
  figures.update(_latent_views(arrays, path))
  if 'umap' in arrays:
    figures['umap'] = plots.save_umap(*arrays['umap'], ds.class_names, path('umap'))
  if not os.path.isfile(figures['loss']):  # --mode=eval of a run whose curves were not drawn
    del figures['loss']
  return {k: os.path.relpath(v, workdir) for k, v in figures.items()}


def _latent_views(arrays, path):
  """The traversals, interpolations and samples of eval/latent_views.py."""
  travel, stds = arrays['traversals']
  decoded, faded = arrays['interpolations']
  rows, names = [], []
  for p in range(len(decoded)):
    rows += [decoded[p], faded[p]]
    names += [f'pair {p + 1}: decoded', 'pixel crossfade']
  samples = arrays['samples']
  per_row = 8
  return {
      'traversals': plots.save_image_rows(
          list(travel), [f'unit {d} (std {s:.2f})' for d, s in enumerate(stds)],
          path('traversals'), 'Each unit swept over its 2nd-98th test percentile, the others at '
          'the mean test code'),
      'interpolations': plots.save_image_rows(
          rows, names, path('interpolations'),
          'Decodings along the line between two test codes, over the pixel crossfade'),
      'samples': plots.save_image_rows(
          [samples[i:i + per_row] for i in range(0, len(samples), per_row)],
          [''] * -(-len(samples) // per_row), path('samples'),
          'Decodings of draws from a Gaussian fitted to the training codes'),
  }
