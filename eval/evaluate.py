"""The whole evaluation of a trained model: numbers into results.json, figures, report.md."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ae import checkpoint as ckpt
from ae import parallel
from ae.data import load_dataset
from ae.metrics_log import read_records
from ae.model import create_model
from ae.train import abstract_params, add_noise, apply_in_batches, make_batched_fn
from eval import latents, plots, references, report
from eval.neighbors import nearest_neighbors
from eval.projection import umap_projection
from eval.refine import make_refine_fn
from eval.retrieval import retrieval_metrics

NUM_SHOWN = 10  # test images in the reconstruction, denoising and query figures
SEED_GALLERY = 500  # the seed's query setting: first 500 train + first 500 test images


def psnr(mse):
  return float(10 * np.log10(1.0 / mse)) if mse > 0 else float('inf')


def make_encode_fn(mesh, model):
  """The jitted batch function that gives the latent codes of clean images."""
  return make_batched_fn(mesh, lambda params, x, idx: model.apply(params, x, method=model.encode))


def make_encoders(mesh, model, noise_std, seed):
  """Jitted batch functions: codes; per-test-image codes and errors, clean and noisy; figure images."""
  noise_key = jax.random.fold_in(jax.random.key(seed), 2)

  def noisy(x, idx):
    """Noise drawn per image from its index: the same for an image in any batch or process."""
    keys = jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(idx)
    return jax.vmap(lambda k, xi: add_noise(xi, k, noise_std))(keys, x)

  def test_outputs(params, x, idx):
    noisy_x = noisy(x, idx)
    z, z_noisy = (model.apply(params, v, method=model.encode) for v in (x, noisy_x))
    sse = lambda a, b: jnp.sum(jnp.square(a - b), axis=(1, 2, 3))
    return {'z': z, 'z_noisy': z_noisy,
            'sse_recon': sse(model.apply(params, z, method=model.decode), x),
            'sse_noisy_input': sse(noisy_x, x),
            'sse_recon_noisy': sse(model.apply(params, z_noisy, method=model.decode), x)}

  def shown(params, x, idx):
    noisy_x = noisy(x, idx)
    return {'recon': model.apply(params, x), 'noisy': noisy_x,
            'recon_noisy': model.apply(params, noisy_x)}

  return (make_encode_fn(mesh, model), make_batched_fn(mesh, test_outputs),
          make_batched_fn(mesh, shown))


def parent_results(init_from):
  """The results.json of the run that train.init_from points at, if it has one."""
  if not init_from:
    return None
  d = os.path.abspath(init_from)
  for cand in (d, os.path.dirname(d)):
    path = os.path.join(cand, 'results.json')
    if os.path.isfile(path):
      with open(path) as f:
        r = json.load(f)
      return {'workdir': cand, 'test': r.get('test'), 'denoising': r.get('denoising'),
              'retrieval': r.get('retrieval'), 'noisy_queries': r.get('noisy_queries')}
  return None


def training_summary(workdir):
  records = read_records(os.path.join(workdir, 'metrics.jsonl'))
  epochs = [r for r in records if 'test/mse' in r]
  if not epochs:
    return {}
  return {'epochs': epochs[-1]['epoch'], 'steps': epochs[-1]['step'],
          'train_time_s': float(sum(r['epoch_time_s'] for r in epochs)),
          'final_test_mse': epochs[-1]['test/mse']}


def evaluate(config, workdir, params, mesh, ds):
  """Computes every number and figure of a run; process 0 writes them. Returns the results dict."""
  t0 = time.time()
  e = config.eval
  model = create_model(config.model)
  nn_kwargs = {'query_chunk': e.query_chunk, 'gallery_chunk': e.gallery_chunk, 'mesh': mesh}
  fig_dir = os.path.join(workdir, 'figures')
  rep = parallel.replicated(mesh)
  train_dev, test_dev = parallel.put(ds.train_images, rep), parallel.put(ds.test_images, rep)
  encode_fn, test_fn, shown_fn = make_encoders(mesh, model, e.noise_std, config.seed)
  batch = config.train.eval_batch_size
  n_test = len(ds.test_images)

  logging.info('eval: encoding %d train and %d test images', len(ds.train_images), n_test)
  z_train = apply_in_batches(mesh, encode_fn, params, train_dev, len(ds.train_images), batch)
  out = apply_in_batches(mesh, test_fn, params, test_dev, n_test, batch)
  n_show = min(NUM_SHOWN, n_test)
  shown = apply_in_batches(mesh, shown_fn, params, test_dev, n_show, batch)
  pixels = np.prod(ds.test_images.shape[1:])
  mse = float(out['sse_recon'].sum() / (n_test * pixels))
  results = {
      'num_train': len(ds.train_images), 'num_test': n_test, 'data_source': ds.source,
      'test': {'mse': mse, 'psnr': psnr(mse)},
      'latent': latents.latent_stats(out['z']),
      'denoising': {
          'noise_std': e.noise_std,
          'mse_noisy_vs_clean': float(out['sse_noisy_input'].sum() / (n_test * pixels)),
          'mse_recon_noisy_vs_clean': float(out['sse_recon_noisy'].sum() / (n_test * pixels)),
          'mse_recon_clean_vs_clean': mse},
  }

  refined = None
  if e.refine_steps:
    logging.info('eval: refining %d test codes, %d Adam steps each through the decoder', n_test,
                 e.refine_steps)
    refined = apply_in_batches(mesh, make_refine_fn(mesh, model, e.refine_steps, e.refine_lr),
                               params, test_dev, n_test, batch)
    r_mse = float(refined['sse'].sum() / (n_test * pixels))
    improved = float(np.mean(refined['sse'] < refined['sse_encoder']))
    results['refined'] = {'steps': e.refine_steps, 'lr': e.refine_lr, 'test_mse': r_mse,
                          'psnr': psnr(r_mse), 'improved_fraction': improved}

  n_q = e.retrieval_queries or n_test
  q_labels = ds.test_labels[:n_q]
  logging.info('eval: retrieval, %d test queries over %d training images', n_q, len(z_train))
  results['retrieval'] = {m: retrieval_metrics(out['z'][:n_q], q_labels, z_train, ds.train_labels,
                                               m, **nn_kwargs) for m in e.metrics}
  results['noisy_queries'] = {
      m: retrieval_metrics(out['z_noisy'][:n_q], q_labels, z_train, ds.train_labels, m, ks=(10,),
                           **nn_kwargs) for m in e.metrics}
  results['retrieval_queries'] = n_q

  logging.info('eval: PCA-%d and raw-pixel references', config.model.latent_dim)
  x_train = references.flatten_float(ds.train_images)
  x_test = references.flatten_float(ds.test_images)
  mean, comps = references.fit_pca(x_train, config.model.latent_dim)
  p_train, p_test = (references.pca_encode(x, mean, comps) for x in (x_train, x_test))
  n_raw = min(e.reference_queries or n_test, n_test)
  results['references'] = {
      'pca': {'dim': config.model.latent_dim, 'num_queries': n_q,
              'test_mse': references.pca_reconstruction_mse(x_test, mean, comps),
              **{m: retrieval_metrics(p_test[:n_q], q_labels, p_train, ds.train_labels, m,
                                      **nn_kwargs) for m in e.metrics}},
      'raw_pixels': {'dim': int(x_train.shape[1]), 'num_queries': n_raw,
                     **{m: retrieval_metrics(x_test[:n_raw], ds.test_labels[:n_raw], x_train,
                                             ds.train_labels, m, query_chunk=256,
                                             gallery_chunk=2048, mesh=mesh)
                        for m in e.metrics}}}
  del x_train, x_test

  # The seed's own setting: gallery = first 500 train + first 500 test codes, queries = its first 10.
  seed_z = np.concatenate([z_train[:SEED_GALLERY], out['z'][:SEED_GALLERY]])
  seed_labels = np.concatenate([ds.train_labels[:SEED_GALLERY], ds.test_labels[:SEED_GALLERY]])
  seed_images = np.concatenate([ds.train_images[:SEED_GALLERY], ds.test_images[:SEED_GALLERY]])
  n_seed_q = min(NUM_SHOWN, len(seed_z) - 1)
  k_seed = min(e.k, len(seed_z) - 1)
  seed_nn = {m: nearest_neighbors(seed_z, seed_z, k_seed, m, exclude_self=True, **nn_kwargs)[1][:n_seed_q]
             for m in e.metrics}
  results['seed_setting'] = {
      m: {f'P@{k_seed}': float(np.mean(seed_labels[i] == seed_labels[:n_seed_q, None]))}
      for m, i in seed_nn.items()}

  k_grid = min(e.k, len(z_train))
  grids = {m: nearest_neighbors(out['z'][:n_show], z_train, k_grid, m, **nn_kwargs)
           for m in e.metrics}
  results['train'] = training_summary(workdir)
  parent = parent_results(config.train.init_from)
  if parent:
    results['parent'] = parent
  umap_xy = None
  if e.umap_points:
    logging.info('eval: UMAP of %d test codes', min(e.umap_points, n_test))
    umap_xy = umap_projection(out['z'], ds.test_labels, e.umap_points, config.seed)
  results['eval_time_s'] = time.time() - t0

  if jax.process_index() != 0:
    return results
  names = ds.class_names
  rows, row_names = [ds.test_images[:n_show], shown['recon']], ['test image', 'reconstruction']
  title = f'First {n_show} test images and their reconstructions (test MSE {mse:.4f})'
  if refined is not None:
    decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
    rows.append(np.asarray(decode(params, refined['z'][:n_show])))
    row_names.append(f'refined code ({e.refine_steps} steps)')
    title += f"; refined codes {results['refined']['test_mse']:.4f}"
  figures = {
      'loss': os.path.join(fig_dir, 'loss.png'),
      'reconstructions': plots.save_image_rows(
          rows, row_names, os.path.join(fig_dir, 'reconstructions.png'), title),
      'latent_values': plots.save_latent_values(out['z'], config.seed,
                                                os.path.join(fig_dir, 'latent_values.png')),
      'latent_histograms': plots.save_latent_histograms(
          out['z'], os.path.join(fig_dir, 'latent_histograms.png')),
      'latent_correlation': plots.save_correlation(
          np.array(results['latent']['corr']), os.path.join(fig_dir, 'latent_correlation.png')),
      'precision': plots.save_precision_comparison(
          results, os.path.join(fig_dir, 'precision_at_k.png')),
      'denoising': plots.save_image_rows(
          [ds.test_images[:n_show], shown['noisy'], shown['recon_noisy']],
          ['clean', f'noisy (std {e.noise_std:g})', 'reconstruction'],
          os.path.join(fig_dir, 'denoising.png'), 'Noisy test images and their reconstructions'),
      'seed_setting': plots.save_seed_setting(
          seed_images, seed_labels, seed_nn, os.path.join(fig_dir, 'seed_setting.png')),
  }
  for m, (d, i) in grids.items():
    figures[f'query_{m}'] = plots.save_query_grid(
        ds.test_images[:n_show], ds.test_labels[:n_show], ds.train_images, ds.train_labels, i, d,
        names, os.path.join(fig_dir, f'query_{m}.png'), f'{m} distance in latent space')
  if umap_xy is not None:
    figures['umap'] = plots.save_umap(*umap_xy, names, os.path.join(fig_dir, 'umap.png'))
  if not os.path.isfile(figures['loss']):
    del figures['loss']
  results['figures'] = {k: os.path.relpath(v, workdir) for k, v in figures.items()}

  refined_z = {} if refined is None else {'test_z_refined': refined['z']}
  np.savez_compressed(os.path.join(workdir, 'embeddings.npz'), train_z=z_train,
                      train_labels=ds.train_labels, test_z=out['z'], test_labels=ds.test_labels,
                      **refined_z)
  _write_json(os.path.join(workdir, 'results.json'), results)
  report.write_report(workdir, config, results)
  refined_note = '' if refined is None else f", refined codes {results['refined']['test_mse']:.5f}"
  logging.info('eval: test MSE %.5f (PSNR %.2f dB)%s; P@10 %s; written to %s in %.1f s', mse,
               results['test']['psnr'], refined_note,
               ', '.join(f"{m} {r['P@10']:.3f}" for m, r in results['retrieval'].items()),
               workdir, results['eval_time_s'])
  return results


def _write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def load_params(config, workdir, mesh):
  """The latest checkpoint's params in workdir, replicated over the mesh."""
  mngr = ckpt.open_readonly(workdir)
  shapes = abstract_params(config)
  ckpt.check_shapes(mngr, shapes, f'the checkpoint in {workdir}')
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
  return ckpt.restore_params(mngr, target), mngr.latest_step()


def evaluate_workdir(config, workdir):
  """--mode=eval: evaluates the latest checkpoint in workdir."""
  from ae.config_check import validate_config  # pylint: disable=g-import-not-at-top
  validate_config(config)
  mesh = parallel.make_mesh()
  params, step = load_params(config, workdir, mesh)
  logging.info('eval: checkpoint step %d from %s', step, workdir)
  return evaluate(config, workdir, params, mesh, load_dataset(config.data, config.seed))
