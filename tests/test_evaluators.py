"""Each evaluator's numbers in a finished run's results.json, against an independent computation:
NumPy brute force over embeddings.npz, an SVD, and the model rebuilt from plain flax layers
(model.conv_impl='flax') on the checkpoint's parameters."""

import json

import jax
import numpy as np
import pytest

from ae import checkpoint as ckpt
from ae import parallel, rng
from ae.data import load_dataset
from ae.metrics_log import read_records
from ae.model import create_model
from configs import test as test_config

METRICS = ('euclidean', 'manhattan', 'cosine')


@pytest.fixture(scope='module')
def run(run_dir):
  """results.json, embeddings.npz, the data and a flax-form model with the run's parameters."""
  config = test_config.get_config()
  config.model.conv_impl = 'flax'
  with open(run_dir / 'results.json') as f:
    results = json.load(f)
  with np.load(run_dir / 'embeddings.npz') as f:
    emb = dict(f)
  params, _ = ckpt.load_params(config.model, str(run_dir), parallel.make_mesh())
  model = create_model(config.model, 'cpu')
  return results, emb, load_dataset(config.data, config.seed), model, params, config


def _distances(q, g, metric):
  q, g = q.astype(np.float64), g.astype(np.float64)
  if metric == 'euclidean':
    return np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
  if metric == 'manhattan':
    return np.abs(q[:, None] - g[None]).sum(-1)
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
  return 1 - unit(q) @ unit(g).T


def _precision_and_map(q, q_labels, g, g_labels, metric, ks=(1, 10, 100)):
  d = _distances(q, g, metric)
  order = np.argsort(d, axis=1, kind='stable')[:, :max(ks)]  # ties: the lower index first
  rel = (g_labels[order] == q_labels[:, None]).astype(np.float64)
  out = {f'P@{k}': rel[:, :k].mean() for k in ks}
  hits = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
  ap = (hits * rel).sum(1) / np.maximum(rel.sum(1), 1)
  out[f'mAP@{max(ks)}'] = ap.mean()
  return out


def _images(x_u8):
  return x_u8.astype(np.float64) / 255


def test_reconstruction_and_denoising_numbers(run, run_dir):
  results, _, ds, model, params, config = run
  x = ds.test_images.astype(np.float32) / 255
  recon = np.asarray(model.apply(params, x), np.float64)
  mse = np.mean((recon - _images(ds.test_images)) ** 2)
  assert results['test']['mse'] == pytest.approx(mse, rel=1e-5)
  assert results['test']['psnr'] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
  last_epoch = [r for r in read_records(str(run_dir / 'metrics.jsonl')) if 'test/mse' in r][-1]
  assert results['test']['mse'] == pytest.approx(last_epoch['test/mse'], rel=1e-5)
  # the noisy copy of test image i: N(0, 0.1^2) from fold_in(the EVAL_NOISE stream, i), clipped
  key = rng.stream(config.seed, rng.EVAL_NOISE)
  noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape[1:]))
                    for i in range(len(x))])
  noisy = np.clip(x + np.float32(config.eval.noise_std) * noise, 0, 1).astype(np.float32)
  dn = results['denoising']
  assert dn['noise_std'] == config.eval.noise_std
  assert dn['mse_recon_clean_vs_clean'] == results['test']['mse']
  assert dn['mse_noisy_vs_clean'] == pytest.approx(
      np.mean((noisy - _images(ds.test_images)) ** 2), rel=1e-5)
  recon_noisy = np.asarray(model.apply(params, noisy), np.float64)
  assert dn['mse_recon_noisy_vs_clean'] == pytest.approx(
      np.mean((recon_noisy - _images(ds.test_images)) ** 2), rel=1e-5)


def test_the_codes_and_their_statistics(run):
  results, emb, ds, model, params, _ = run
  encode = lambda images: np.asarray(model.apply(params, images.astype(np.float32) / 255,
                                                 method=model.encode))
  np.testing.assert_allclose(emb['test_z'], encode(ds.test_images), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(emb['train_z'], encode(ds.train_images), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(emb['train_labels'], ds.train_labels)
  np.testing.assert_array_equal(emb['test_labels'], ds.test_labels)
  z, st = emb['test_z'].astype(np.float64), results['latent']
  np.testing.assert_allclose(st['mean'], z.mean(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(st['std'], z.std(0), rtol=1e-6)
  np.testing.assert_allclose(st['min'], z.min(0))
  np.testing.assert_allclose(st['max'], z.max(0))
  np.testing.assert_allclose(st['corr'], np.corrcoef(z.T), atol=1e-9)


def _literature(q, q_labels, g, g_labels, metric):
  """mAP@1000 (over the gallery when smaller), 10-NN vote accuracy (a tie: the class of the
  nearest tied neighbour), the P@k curve for k = 1..100 and the neighbours' labels, by brute force."""
  order = np.argsort(_distances(q, g, metric), axis=1, kind='stable')[:, :1000]
  labels = g_labels[order]
  rel = (labels == q_labels[:, None]).astype(np.float64)
  hits = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
  map1000 = np.mean((hits * rel).sum(1) / np.maximum(rel.sum(1), 1))
  correct = []
  for row, truth in zip(labels[:, :10], q_labels):
    counts = {c: list(row).count(c) for c in row}
    best = max(counts.values())
    winner = next(c for c in row if counts[c] == best)  # the nearest of the tied classes
    correct.append(winner == truth)
  curve = [rel[:, :k].mean() for k in range(1, 101)]
  return map1000, np.mean(correct), curve, labels


def test_retrieval_against_brute_force(run):
  results, emb, ds, _, _, _ = run
  assert results['retrieval_queries'] == len(ds.test_images)
  for m in METRICS:
    ref = _precision_and_map(emb['test_z'], emb['test_labels'], emb['train_z'],
                             emb['train_labels'], m)
    for key, value in ref.items():
      assert results['retrieval'][m][key] == pytest.approx(value, abs=0.005), (m, key)
    map1000, knn, curve, labels = _literature(emb['test_z'], emb['test_labels'], emb['train_z'],
                                              emb['train_labels'], m)
    assert results['retrieval'][m]['mAP@1000'] == pytest.approx(map1000, abs=0.005), m
    assert results['retrieval'][m]['knn_accuracy'] == pytest.approx(knn, abs=2 / len(labels)), m
    np.testing.assert_allclose(results['precision_curve']['model'][m], curve, atol=0.005)
    for c, name in enumerate(ds.class_names):  # per query class: P@10 and the neighbours' classes
      mine = labels[emb['test_labels'] == c, :10]
      assert results['retrieval_per_class'][m][name] == pytest.approx(np.mean(mine == c), abs=0.02)
      np.testing.assert_allclose(results['neighbour_classes'][m][c],
                                 [np.mean(mine == j) for j in range(10)], atol=0.02)


def test_pca_and_raw_pixel_references(run):
  results, _, ds, _, _, config = run
  refs, dim = results['references'], config.model.latent_dim
  x_train = ds.train_images.reshape(len(ds.train_images), -1).astype(np.float64) / 255
  x_test = ds.test_images.reshape(len(ds.test_images), -1).astype(np.float64) / 255
  mean = x_train.mean(0)
  _, _, vt = np.linalg.svd(x_train - mean, full_matrices=False)
  comps = vt[:dim].T
  recon = np.clip((x_test - mean) @ comps @ comps.T + mean, 0, 1)
  assert refs['pca']['dim'] == dim
  assert refs['pca']['test_mse'] == pytest.approx(np.mean((recon - x_test) ** 2), rel=1e-4)
  p_train, p_test = (x_train - mean) @ comps, (x_test - mean) @ comps
  n_raw = refs['raw_pixels']['num_queries']
  assert n_raw == min(config.eval.reference_queries, len(x_test))
  for m in METRICS:
    pca = _precision_and_map(p_test, ds.test_labels, p_train, ds.train_labels, m)
    raw = _precision_and_map(x_test[:n_raw], ds.test_labels[:n_raw], x_train, ds.train_labels, m)
    for key in ('P@1', 'P@10', 'P@100', 'mAP@100'):
      assert refs['pca'][m][key] == pytest.approx(pca[key], abs=0.005), (m, key)
      assert refs['raw_pixels'][m][key] == pytest.approx(raw[key], abs=0.005), (m, key)
    for name, q, q_labels, g in (('pca', p_test, ds.test_labels, p_train),
                                 ('raw_pixels', x_test[:n_raw], ds.test_labels[:n_raw], x_train)):
      map1000, knn, curve, _ = _literature(q, q_labels, g, ds.train_labels, m)
      assert refs[name][m]['mAP@1000'] == pytest.approx(map1000, abs=0.005), (name, m)
      assert refs[name][m]['knn_accuracy'] == pytest.approx(knn, abs=2 / len(q)), (name, m)
      np.testing.assert_allclose(results['precision_curve'][name][m], curve, atol=0.005)


def test_noisy_queries_and_the_seed_setting(run):
  results, emb, ds, model, params, config = run
  x = ds.test_images.astype(np.float32) / 255
  key = rng.stream(config.seed, rng.EVAL_NOISE)
  noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape[1:]))
                    for i in range(len(x))])
  noisy = np.clip(x + np.float32(config.eval.noise_std) * noise, 0, 1).astype(np.float32)
  z_noisy = np.asarray(model.apply(params, noisy, method=model.encode))
  # the seed's gallery: the first 500 train and first 500 test codes; queries its first 10
  gallery = np.concatenate([emb['train_z'][:500], emb['test_z'][:500]])
  labels = np.concatenate([emb['train_labels'][:500], emb['test_labels'][:500]])
  for m in METRICS:
    ref = _precision_and_map(z_noisy, ds.test_labels, emb['train_z'], emb['train_labels'], m)
    assert results['noisy_queries'][m]['P@10'] == pytest.approx(ref['P@10'], abs=0.005), m
    d = _distances(gallery[:10], gallery, m)
    d[np.arange(10), np.arange(10)] = np.inf  # never the query itself
    nearest = np.argsort(d, axis=1, kind='stable')[:, :10]
    assert results['seed_setting'][m]['P@10'] == pytest.approx(
        np.mean(labels[nearest] == labels[:10, None]), abs=0.02), m


def test_refined_codes(run):
  results, emb, ds, model, params, config = run
  x = _images(ds.test_images)
  refined = np.asarray(model.apply(params, emb['test_z_refined'], method=model.decode), np.float64)
  encoded = np.asarray(model.apply(params, emb['test_z'], method=model.decode), np.float64)
  sse_refined, sse_encoded = (((r - x) ** 2).sum(axis=(1, 2, 3)) for r in (refined, encoded))
  r = results['refined']
  assert r['steps'] == 5 and r['lr'] == config.eval.refine_lr
  assert r['test_mse'] == pytest.approx(sse_refined.sum() / x.size, rel=1e-5)
  assert r['improved_fraction'] == pytest.approx(np.mean(sse_refined < sse_encoded),
                                                 abs=2 / len(x))
  assert np.all(sse_refined <= sse_encoded + 1e-4)  # an image keeps its code if refining did not help
