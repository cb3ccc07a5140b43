"""report.md: every number and figure of a run on one page."""

import os

from ae.workdir import write_whole

FIGURE_TITLES = {
    'loss': 'Training curves (original report, Figure 3)',
    'reconstructions': 'Reconstructions of the first test images (original report, Figure 5)',
    'latent_values': 'Latent codes of 50 random test images (original report, Figure 6)',
    'latent_histograms': 'Distribution of each latent unit',
    'latent_correlation': 'Correlation between latent units',
    'umap': 'UMAP projection of the test codes (original report, Figure 7)',
    'query_euclidean': 'Nearest training images, Euclidean (original report, Figure 8)',
    'query_manhattan': 'Nearest training images, Manhattan (original report, Figure 9)',
    'query_cosine': 'Nearest training images, cosine (original report, Figure 10)',
    'seed_setting': "The original report's query setting (1,000-image gallery)",
    'precision': 'Precision@k: model, PCA and raw pixels',
    'denoising': 'Noisy inputs and their reconstructions (original report, Figures 11-12)',
    'precision_curve': 'Precision@k for k = 1..100: model, PCA and raw pixels',
    'neighbour_classes': "Classes among each query class's 10 nearest training images",
    'traversals': 'Each latent unit swept alone, the others at the mean test code',
    'interpolations': 'Between two test codes (decoded) and between the two images (crossfade)',
    'samples': 'Decoded draws from a Gaussian fitted to the training codes',
}


RETRIEVAL_KEYS = ('P@1', 'P@10', 'P@100', 'mAP@100', 'mAP@1000', 'knn_accuracy')


def _fmt(x):
  return f'{x:.4f}' if isinstance(x, float) else str(x)


def _retrieval_rows(name, res, metrics):
  rows = []
  for m in metrics:
    r = res[m]
    rows.append(f"| {name} | {m} | " + ' | '.join(_fmt(r.get(k, '-')) for k in RETRIEVAL_KEYS)
                + ' |')
  return rows


def _retrieval_section(results, metrics):
  """The retrieval tables: model, PCA and raw pixels per metric, then the model's P@10 by class."""
  refs = results['references']
  lines = ['## Retrieval', '',
           f"Queries: {results['retrieval_queries']:,} test images; gallery: the training set; "
           'relevant = same class. mAP@100 averages precision at the ranks of the relevant items '
           'within the top 100; mAP@1000 the same within the top 1,000 (the unsupervised-hashing '
           f"protocol on CIFAR-10), over the first {results.get('map_queries', 0):,} queries; "
           'kNN accuracy is the top-1 accuracy of a vote of the 10 nearest (a tie goes to the '
           "nearest tied neighbour's class), as self-supervised papers report it. Raw pixels use "
           f"the first {refs['raw_pixels']['num_queries']:,} test queries.", '',
           '| codes | metric | P@1 | P@10 | P@100 | mAP@100 | mAP@1000 | kNN accuracy |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  lines += _retrieval_rows('model', results['retrieval'], metrics)
  lines += _retrieval_rows(f"PCA-{refs['pca']['dim']}", refs['pca'], metrics)
  lines += _retrieval_rows('raw pixels (3072-D)', refs['raw_pixels'], metrics)
  if 'retrieval_per_class' in results:
    per_class = results['retrieval_per_class']
    names = list(per_class[metrics[0]])
    lines += ['', 'P@10 of the model by query class:', '',
              '| metric | ' + ' | '.join(names) + ' |', '| --- |' + ' --- |' * len(names)]
    lines += [f'| {m} | ' + ' | '.join(_fmt(per_class[m][n]) for n in names) + ' |'
              for m in metrics]
  return lines


def build_report(config, results):
  """The page: a summary, then each section, the figures, TensorBoard and the config."""
  metrics = list(results['retrieval'])
  lines = ['# Autoencoder evaluation', '',
           f"Data: {results['data_source']}, {results['num_train']:,} training and "
           f"{results['num_test']:,} test images. Latent units: {config.model.latent_dim}. "
           f"Evaluation took {results['eval_time_s']:.1f} s.", '']
  tr = results.get('train', {})
  if tr:
    lines += [f"Training: {tr['epochs']} epochs, {tr['steps']} steps, {tr['train_time_s']:.1f} s "
              f"of epochs (final test MSE {tr['final_test_mse']:.5f}).", '']
  lines += _reconstruction_section(results) + ['']
  lines += _retrieval_section(results, metrics)
  lines += _denoising_section(results, metrics)
  lines += _seed_setting_and_latent_sections(results)
  lines += ['', '## Figures', '']
  for key, rel in results['figures'].items():
    lines += [f'### {FIGURE_TITLES.get(key, key)}', '', f'![{key}]({rel})', '']
  if 'projector_points' in results:
    lines += ['## TensorBoard', '',
              '`tensorboard --logdir <the folder that holds this run> '
              '--samples_per_plugin=images=100`: the training scalars; under Images, the '
              'reconstructions of 8 test images at the end of every epoch; under '
              f"Projector, the codes of the first {results['projector_points']:,} test images "
              '(PCA, UMAP, t-SNE, neighbours), with their classes and images.', '']
  lines += ['## Config', '', '```json', config.to_json_best_effort(indent=2), '```', '']
  return '\n'.join(lines)


def _reconstruction_section(results):
  t, refs = results['test'], results['references']
  lines = ['## Reconstruction', '', '| | value |', '| --- | --- |',
           f"| test MSE | {t['mse']:.5f} |", f"| test PSNR (dB) | {t['psnr']:.2f} |",
           f"| PCA-{refs['pca']['dim']} test MSE (reference) | {refs['pca']['test_mse']:.5f} |"]
  if 'refined' in results:
    rf = results['refined']
    lines += [f"| test MSE, codes refined by {rf['steps']} Adam steps (lr {rf['lr']:g}) through the "
              f"decoder | {rf['test_mse']:.5f} |",
              f"| test PSNR (dB), refined codes | {rf['psnr']:.2f} |",
              f"| test images the refinement improved | {rf['improved_fraction']:.1%} |"]
  return lines


def _denoising_section(results, metrics):
  """The denoising MSEs and noisy-query P@10, beside a parent run's (train.init_from)."""
  dn, has_parent = results['denoising'], 'parent' in results
  parent = results.get('parent') or {}
  pdn = parent.get('denoising') or {}
  lines = ['', '## Denoising and noisy queries', '',
           f"Gaussian noise std {dn['noise_std']:g}, clipped to [0, 1].", '',
           '| | this run |' + (' parent run |' if has_parent else ''),
           '| --- | --- |' + (' --- |' if has_parent else '')]
  for key, label in (('mse_noisy_vs_clean', 'MSE(noisy, clean)'),
                     ('mse_recon_noisy_vs_clean', 'MSE(reconstruction of noisy, clean)'),
                     ('mse_recon_clean_vs_clean', 'MSE(reconstruction of clean, clean)')):
    extra = f" {_fmt(pdn.get(key, '-'))} |" if has_parent else ''
    lines.append(f'| {label} | {dn[key]:.5f} |{extra}')
  for m in metrics:
    extra = ''
    if has_parent:
      pq = (parent.get('noisy_queries') or {}).get(m, {})
      extra = f" {_fmt(pq.get('P@10', '-'))} |"
    lines.append(f"| noisy-query P@10, {m} (clean: {results['retrieval'][m]['P@10']:.4f}) | "
                 f"{results['noisy_queries'][m]['P@10']:.4f} |{extra}")
  if has_parent:
    lines += ['', f"Parent run (train.init_from): `{parent['workdir']}`."]
  return lines


def _seed_setting_and_latent_sections(results):
  lines = ['', "## The original report's setting", '',
           'Gallery: first 500 train + first 500 test codes; queries: the first 10 (self excluded).',
           '', '| metric | precision |', '| --- | --- |']
  for m, r in results['seed_setting'].items():
    (k, v), = r.items()
    lines.append(f'| {m} | {k} = {v:.2f} |')
  st = results['latent']
  lines += ['', '## Latent statistics (test set)', '', '| unit | mean | std | min | max |',
            '| --- | --- | --- | --- | --- |']
  for j in range(len(st['mean'])):
    lines.append(f"| {j} | {st['mean'][j]:.3f} | {st['std'][j]:.3f} | {st['min'][j]:.3f} | "
                 f"{st['max'][j]:.3f} |")
  return lines


def write_report(workdir, config, results):
  path = os.path.join(workdir, 'report.md')
  write_whole(path, build_report(config, results))
  return path
