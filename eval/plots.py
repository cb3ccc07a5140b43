"""Figures, drawn from arrays and dicts computed elsewhere."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from ae.workdir import writing  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with writing(path):
    fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  return path


def save_loss_curves(records, path):
  """Train loss and test MSE per epoch (the report's Figure 3), from metrics.jsonl records."""
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


def _as_float_image(x):
  x = np.asarray(x)
  return x.astype(np.float32) / 255 if x.dtype == np.uint8 else np.clip(x, 0, 1).astype(np.float32)


def mosaic(rows, gap=2, row_gap=2, group=0, group_gap=0, top=0):
  """Rows of equally sized HxWx3 images (uint8 or float in [0, 1]) pasted into one float image.

  Columns are `gap` pixels apart; after every `group` columns (when set) `group_gap` more; rows are
  `row_gap` apart, below `top` blank rows (room for labels). The background is white. Returns the
  image and the top-left (y, x) of each cell, as [row][column].
  Drawing one image is far faster in matplotlib than one subplot per cell (the query grids hold
  hundreds of cells).
  """
  h, w = np.shape(rows[0][0])[:2]
  n_cols = max(len(r) for r in rows)
  xs = [c * (w + gap) + (c // group * group_gap if group else 0) for c in range(n_cols)]
  ys = [top + r * (h + row_gap) for r in range(len(rows))]
  out = np.ones((ys[-1] + h, xs[-1] + w, 3), np.float32)
  corners = []
  for r, images in enumerate(rows):
    corners.append([])
    for c, img in enumerate(images):
      out[ys[r]:ys[r] + h, xs[c]:xs[c] + w] = _as_float_image(img)
      corners[-1].append((ys[r], xs[c]))
  return out, corners


def _mosaic_figure(image, inches_per_pixel=1 / 30):
  """A figure showing `image` on one axes without ticks, sized to it."""
  fig, ax = plt.subplots(figsize=(max(image.shape[1] * inches_per_pixel, 4),
                                  image.shape[0] * inches_per_pixel + 0.5))
  ax.imshow(image, interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([])
  for s in ax.spines.values():
    s.set_visible(False)
  return fig, ax


def _frame(ax, y, x, size, color):
  ax.add_patch(plt.Rectangle((x - 1.5, y - 1.5), size + 2, size + 2, fill=False, edgecolor=color,
                             linewidth=1.2))


def save_image_rows(rows, row_titles, path, title):
  """Rows of images, one row per array (the report's Figures 5, 11 and 12)."""
  image, corners = mosaic(rows)
  fig, ax = _mosaic_figure(image, inches_per_pixel=1 / 27)
  h = np.shape(rows[0][0])[0]
  ax.set_yticks([row[0][0] + h / 2 for row in corners], row_titles, fontsize=8)
  ax.tick_params(axis='y', length=0)
  ax.set_title(title, fontsize=10)
  return _save(fig, path)


def save_latent_values(z_NxD, seed, path, n=50):
  """Latent values of n random test images, one line per image (the report's Figure 6)."""
  rng = np.random.default_rng(seed)
  pick = rng.choice(len(z_NxD), min(n, len(z_NxD)), replace=False)
  fig, ax = plt.subplots(figsize=(7, 4))
  units = np.arange(z_NxD.shape[1])
  for i in pick:
    ax.plot(units, z_NxD[i], 'o-', lw=0.6, ms=2, alpha=0.6)
  ax.set_xticks(units)
  ax.set_xlabel('latent unit')
  ax.set_ylabel('value')
  ax.set_title(f'Latent codes of {len(pick)} random test images')
  ax.grid(alpha=0.3)
  return _save(fig, path)


def save_latent_histograms(z_NxD, path):
  d = z_NxD.shape[1]
  cols = min(d, 5)
  rows = -(-d // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2 * rows), squeeze=False)
  for j in range(rows * cols):
    ax = axes.flat[j]
    if j < d:
      ax.hist(z_NxD[:, j], bins=50, color='C0')
      ax.set_title(f'unit {j}', fontsize=8)
      ax.tick_params(labelsize=6)
    else:
      ax.axis('off')
  fig.suptitle('Distribution of each latent unit over the test set', fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def save_correlation(corr, path):
  fig, ax = plt.subplots(figsize=(4.5, 4))
  im = ax.imshow(corr, vmin=-1, vmax=1, cmap='RdBu_r')
  fig.colorbar(im, ax=ax)
  ax.set_title('Correlation between latent units (test set)', fontsize=9)
  ax.set_xlabel('unit')
  ax.set_ylabel('unit')
  return _save(fig, path)


def save_umap(xy, labels, class_names, path):
  """2-D UMAP of test codes coloured by class (the report's Figure 7)."""
  fig, ax = plt.subplots(figsize=(7, 6))
  for c, name in enumerate(class_names):
    sel = labels == c
    ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=plt.cm.tab10(c), label=name)
  ax.legend(markerscale=4, fontsize=8, loc='best')
  ax.set_title(f'UMAP of {len(xy)} test latent codes')
  ax.set_xticks([])
  ax.set_yticks([])
  return _save(fig, path)


def save_query_grid(query_images, query_labels, gallery_images, gallery_labels, idx_QxK, d_QxK,
                    class_names, path, title):
  """Each query image followed by its k nearest gallery images, titled with their class."""
  q = len(idx_QxK)
  rows = [[query_images[r]] + [gallery_images[g] for g in idx_QxK[r]] for r in range(q)]
  image, corners = mosaic(rows, gap=4, row_gap=16, top=16)
  fig, ax = _mosaic_figure(image, inches_per_pixel=1 / 29)
  w = np.shape(query_images[0])[1]
  for r in range(q):
    y, x = corners[r][0]
    name = class_names[query_labels[r]] if query_labels is not None else 'query'
    ax.text(x + w / 2, y - 1, name, ha='center', va='bottom', fontsize=7, color='C0',
            fontweight='bold')
    for c, g in enumerate(idx_QxK[r]):
      y, x = corners[r][c + 1]
      same = query_labels is not None and gallery_labels[g] == query_labels[r]
      ax.text(x + w / 2, y - 1, f'{class_names[gallery_labels[g]]}\n{d_QxK[r, c]:.2f}',
              ha='center', va='bottom', fontsize=6, color='green' if same else 'black')
  ax.set_title(title, fontsize=10)
  return _save(fig, path)


def save_seed_setting(images, labels, nn_by_metric, path):
  """The report's own setting: the first queries of a 1,000-image gallery, under each metric; frames
  mark the neighbours of the query's class (names would not fit at this size)."""
  metrics = list(nn_by_metric)
  q, k = next(iter(nn_by_metric.values())).shape
  rows = [[img for metric in metrics for img in [images[r]] + [images[g] for g in
                                                              nn_by_metric[metric][r]]]
          for r in range(q)]
  image, corners = mosaic(rows, gap=5, row_gap=5, group=k + 1, group_gap=12, top=8)
  fig, ax = _mosaic_figure(image, inches_per_pixel=1 / 55)
  size = np.shape(images[0])[0]
  for m, metric in enumerate(metrics):
    y, x = corners[0][m * (k + 1)]
    ax.text(x, y - 2, metric, ha='left', va='bottom', fontsize=7)
    for r in range(q):
      _frame(ax, *corners[r][m * (k + 1)], size, 'C0')
      for c, g in enumerate(nn_by_metric[metric][r]):
        if labels[g] == labels[r]:
          _frame(ax, *corners[r][m * (k + 1) + c + 1], size, 'green')
  ax.set_title('The report\'s setting: gallery = first 500 train + first 500 test images; '
               'query framed blue, same class green', fontsize=9)
  return _save(fig, path)


def save_precision_comparison(results, path):
  """Precision@k per metric for the model, PCA and raw pixels."""
  metrics = list(results['retrieval'])
  sources = [('model', results['retrieval']),
             (f"PCA-{results['references']['pca']['dim']}", results['references']['pca']),
             ('raw pixels', results['references']['raw_pixels'])]
  ks = [k for k in results['retrieval'][metrics[0]] if k.startswith('P@')]
  fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.5), squeeze=False)
  width = 0.8 / len(sources)
  for a, k in enumerate(ks):
    ax = axes[0, a]
    for s, (name, res) in enumerate(sources):
      vals = [res[m][k] for m in metrics]
      ax.bar(np.arange(len(metrics)) + s * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(sources) - 1) / 2)
    ax.set_xticklabels(metrics, fontsize=8)
    ax.set_title(k)
    ax.set_ylim(0, 1)
    ax.grid(axis='y', alpha=0.3)
  return _finish_panels(fig, axes, 'precision (same class)',
                        'Retrieval: test queries over the training set', path)


def _finish_panels(fig, axes, ylabel, title, path):
  """Labels a row of panels (the y axis on the first, the legend on the last), titles and
  saves it."""
  axes[0, 0].set_ylabel(ylabel)
  axes[0, -1].legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def save_precision_curve(curves, pca_dim, path):
  """P@k for k = 1..100, one panel per metric, for the model, PCA and raw pixels; the axis spans
  the curves, not 0-1, so that their differences show."""
  names = {'model': 'model', 'pca': f'PCA-{pca_dim}', 'raw_pixels': 'raw pixels'}
  metrics = list(curves['model'])
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False,
                           sharey=True)
  for a, m in enumerate(metrics):
    ax = axes[0, a]
    for source, label in names.items():
      ys = curves[source][m]
      ax.plot(np.arange(1, len(ys) + 1), ys, label=label)
    ax.set_title(m)
    ax.set_xlabel('k (neighbours)')
    ax.grid(alpha=0.3)
  return _finish_panels(fig, axes, 'precision@k (same class)',
                        'Precision@k: test queries over the training set', path)


def save_neighbour_classes(shares, class_names, path):
  """Per metric, the [C, C] share of class j (column) among the top 10 neighbours of class i's
  test queries (row): the diagonal is each class's P@10, the rest the classes the code confuses."""
  metrics = list(shares)
  c = len(class_names)
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.8), squeeze=False)
  for a, m in enumerate(metrics):
    ax, share = axes[0, a], np.asarray(shares[m])
    ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    for i in range(c):
      for j in range(c):
        ax.text(j, i, f'{share[i, j]:.2f}'.lstrip('0'), ha='center', va='center', fontsize=6,
                color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xticks(range(c))
    ax.set_xticklabels(class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(c))
    ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xlabel('neighbour class')
    ax.set_title(m, fontsize=9)
  axes[0, 0].set_ylabel('query class')
  fig.suptitle('Classes among the 10 nearest training images of each class\'s test queries',
               fontsize=10)
  fig.tight_layout()
  return _save(fig, path)
