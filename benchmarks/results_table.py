"""Gathers the results.json of several runs into one Markdown table.

    python -m benchmarks.results_table runs/default runs/denoise runs/conv ...
"""

import json
import os
import sys

METRICS = ('euclidean', 'manhattan', 'cosine')


def _get(d, *keys):
  for k in keys:
    if not isinstance(d, dict) or k not in d:
      return None
    d = d[k]
  return d


def _fmt(x, spec='.4f'):
  return '-' if x is None else format(x, spec)


def _noise(config):
  std = _get(config, 'train', 'noise_std')
  return f'U(0, {std})' if std and _get(config, 'train', 'random_noise_std') else std


def _per_metric(section, key):
  """'eucl / manh / cos' of one number (- where a run predates it)."""
  return ' / '.join(_fmt(_get(section or {}, m, key), '.3f') for m in METRICS)


def row(name, r, config):
  p10 = [_fmt(_get(r, 'retrieval', m, 'P@10'), '.3f') for m in METRICS]
  noisy = [_fmt(_get(r, 'noisy_queries', m, 'P@10'), '.3f') for m in METRICS]
  tr = r.get('train') or {}
  return (f"| {name} | {_get(config, 'model', 'decoder') or '-'} | {_get(config, 'model', 'latent_dim')} "
          f"| {_noise(config)} | {_fmt(_get(r, 'test', 'mse'), '.5f')} "
          f"| {_fmt(_get(r, 'refined', 'test_mse'), '.5f')} "
          f"| {_fmt(_get(r, 'test', 'psnr'), '.2f')} | {' / '.join(p10)} "
          f"| {_per_metric(r.get('retrieval'), 'mAP@1000')} "
          f"| {_per_metric(r.get('retrieval'), 'knn_accuracy')} | {' / '.join(noisy)} "
          f"| {_fmt(_get(r, 'denoising', 'mse_recon_noisy_vs_clean'), '.5f')} "
          f"| {tr.get('epochs', '-')} | {_fmt(tr.get('train_time_s'), '.0f')} |")


def _reference_row(name, ref, dim):
  p10 = ' / '.join(_fmt(_get(ref, m, 'P@10'), '.3f') for m in METRICS)
  return (f"| {name} | - | {dim} | - | {_fmt(ref.get('test_mse'), '.5f')} | - | - | {p10} "
          f"| {_per_metric(ref, 'mAP@1000')} | {_per_metric(ref, 'knn_accuracy')} "
          '| - | - | - | - |')


def build_table(run_dirs):
  """The runs in the order given, then a PCA reference per latent size among them (a run with a
  32-unit code is compared with PCA-32, not PCA-10) and the raw-pixel reference."""
  lines = ['| run | decoder | latent | noise | test MSE | refined MSE | PSNR | P@10 eucl / manh / cos '
           '| mAP@1000 | kNN accuracy | noisy-query P@10 | MSE(recon noisy) | epochs | train s |',
           '| --- ' * 14 + '|']
  pca, raw = {}, None
  for d in run_dirs:
    with open(os.path.join(d, 'results.json')) as f:
      r = json.load(f)
    config = {}
    if os.path.isfile(os.path.join(d, 'config.json')):
      with open(os.path.join(d, 'config.json')) as f:
        config = json.load(f)
    lines.append(row(os.path.basename(os.path.normpath(d)), r, config))
    refs = r.get('references') or {}
    if 'pca' in refs:
      pca.setdefault(refs['pca']['dim'], refs['pca'])
    raw = raw or refs.get('raw_pixels')
  for dim in sorted(pca):
    lines.append(_reference_row(f'PCA-{dim} (reference)', pca[dim], dim))
  if raw:
    lines.append(_reference_row('raw pixels (reference)', raw, raw['dim']))
  return '\n'.join(lines)


def main(argv):
  if len(argv) < 2:
    raise SystemExit(__doc__)
  missing = [d for d in argv[1:] if not os.path.isfile(os.path.join(d, 'results.json'))]
  if missing:
    raise SystemExit(f'no results.json in: {", ".join(missing)} (run main.py there first)')
  print(build_table(argv[1:]))


if __name__ == '__main__':
  main(sys.argv)
