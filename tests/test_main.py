"""main.py end to end on the tiny synthetic config: train + eval, eval again, query, errors."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_python

FIGURES = ('loss', 'reconstructions', 'latent_values', 'latent_histograms', 'latent_correlation',
           'query_euclidean', 'query_manhattan', 'query_cosine', 'seed_setting',
           'precision_at_k', 'denoising', 'precision_curve', 'neighbour_classes', 'traversals',
           'interpolations', 'samples')


def test_train_run_leaves_every_file(run_dir):
  for name in ('config.json', 'metrics.jsonl', 'results.json', 'embeddings.npz', 'report.md'):
    assert (run_dir / name).is_file(), name
  assert json.loads((run_dir / 'config.json').read_text())['train']['noise_std'] == 0.1
  records = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  assert any('test/mse' in r for r in records)
  assert all({'step', 'epoch', 'train/loss', 'imgs_per_s'} <= r.keys() for r in records
             if 'train/loss' in r)
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(run_dir / 'tensorboard'))
  assert sorted(os.listdir(run_dir / 'checkpoints')) == ['16', '8']


def test_every_figure_is_a_sensible_png_named_in_the_report(run_dir):
  report = (run_dir / 'report.md').read_text()
  for name in FIGURES:
    path = run_dir / 'figures' / f'{name}.png'
    with Image.open(path) as im:
      assert im.format == 'PNG' and im.size[0] >= 300 and im.size[1] >= 150, (name, im.size)
      assert np.asarray(im.convert('L')).std() > 5, name  # not blank
    assert f'figures/{name}.png' in report, name
  assert not (run_dir / 'figures' / 'umap.png').exists() and 'umap.png' not in report  # no points


def test_results_hold_every_number(run_dir):
  r = json.loads((run_dir / 'results.json').read_text())
  assert 0 < r['test']['mse'] < 0.1 and r['test']['psnr'] == pytest.approx(
      10 * np.log10(1 / r['test']['mse']))
  for section in (r['retrieval'], r['references']['pca'], r['references']['raw_pixels']):
    for m in ('euclidean', 'manhattan', 'cosine'):
      assert {'P@1', 'P@10', 'P@100', 'mAP@100'} <= section[m].keys()
      assert all(0 <= v <= 1 for v in section[m].values())
  assert {'mse_noisy_vs_clean', 'mse_recon_noisy_vs_clean', 'mse_recon_clean_vs_clean'} <= r[
      'denoising'].keys()
  assert set(r['noisy_queries']) == set(r['seed_setting']) == {'euclidean', 'manhattan', 'cosine'}
  assert len(r['latent']['mean']) == 10 and np.array(r['latent']['corr']).shape == (10, 10)
  assert r['references']['pca']['test_mse'] > 0 and r['train']['epochs'] == 2
  assert r['refined']['steps'] == 5 and r['refined']['test_mse'] <= r['test']['mse']
  assert r['refined']['psnr'] == pytest.approx(10 * np.log10(1 / r['refined']['test_mse']))
  assert 'codes refined by 5 Adam steps' in (run_dir / 'report.md').read_text()
  with np.load(run_dir / 'embeddings.npz') as f:
    assert f['train_z'].shape == (256, 10) and f['test_z'].shape == (64, 10)
    assert f['train_labels'].shape == (256,) and f['test_labels'].shape == (64,)
    assert f['test_z_refined'].shape == (64, 10)


def test_query_mode_answers_good_images_and_reports_the_corrupt_one(run_dir, tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a.png')
  Image.fromarray(rgb).save(tmp_path / 'b.jpg', quality=90)
  Image.fromarray(rgb[..., 0]).save(tmp_path / 'gray.png')
  Image.fromarray(np.dstack([rgb, np.full((32, 32), 200, np.uint8)])).save(tmp_path / 'rgba.png')
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / 'big.png')
  (tmp_path / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={run_dir}', '--mode=query',
                     f'--query={tmp_path}/*.png', f'--query={tmp_path}/b.jpg'])
  assert proc.returncode == 1  # one query failed
  assert 'corrupt.png' in proc.stderr and 'not a readable' in proc.stderr
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
  answered = {os.path.basename(l['query']) for l in lines}
  assert answered == {'a.png', 'b.jpg', 'gray.png', 'rgba.png', 'big.png'}
  assert len(lines) == 5 * 3
  for l in lines:
    assert len(l['indices']) == len(l['classes']) == len(l['distances']) == 10
    assert l['distances'] == sorted(l['distances'])
  a = {l['metric']: l for l in lines if l['query'].endswith('a.png')}
  assert a['euclidean']['classes'][0] in ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                                          'frog', 'horse', 'ship', 'truck')
  assert 'converted' in proc.stderr  # the notes for grayscale, RGBA and 64x64
  assert len(os.listdir(run_dir / 'queries')) == 5


def test_eval_mode_reevaluates_the_latest_checkpoint(run_dir, tmp_path):
  before = json.loads((run_dir / 'results.json').read_text())
  run_dir = shutil.copytree(run_dir, tmp_path / 'run')  # the other tests keep the first results
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={run_dir}', '--mode=eval',
                     '--config.eval.umap_points=0', "--config.eval.metrics=('cosine',)"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = json.loads((run_dir / 'results.json').read_text())
  assert after['test']['mse'] == pytest.approx(before['test']['mse'], rel=1e-6)
  assert after['retrieval'] == {'cosine': before['retrieval']['cosine']}
  assert 'refined' not in after  # eval.refine_steps is 0 here


def test_mistyped_override_is_an_error(tmp_path):
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={tmp_path}',
                     '--config.train.learning_rat=0.1'])
  assert proc.returncode != 0 and 'learning_rat' in proc.stderr


def test_results_table_gathers_runs(run_dir):
  proc = run_python(['-m', 'benchmarks.results_table', str(run_dir), str(run_dir)])
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith('| run |') and len(lines) == 2 + 2 + 2
  r = json.loads((run_dir / 'results.json').read_text())
  assert lines[2].startswith(f"| run | dense | 10 | 0.1 | {r['test']['mse']:.5f} | "
                             f"{r['refined']['test_mse']:.5f} |")
  assert 'PCA-10 (reference)' in proc.stdout
