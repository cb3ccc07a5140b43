"""main.py end to end on the tiny synthetic config, and its command-line errors."""

import json
import os

from conftest import run_python


def test_train_run_leaves_every_file(tmp_path):
  workdir = tmp_path / 'run'
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={workdir}',
                     '--config.eval.enabled=False'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ('config.json', 'metrics.jsonl', 'figures/loss.png'):
    assert (workdir / name).is_file(), name
  assert json.loads((workdir / 'config.json').read_text())['train']['noise_std'] == 0.1
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('test/mse' in r for r in records)
  assert all({'step', 'epoch', 'train/loss', 'imgs_per_s'} <= r.keys() for r in records
             if 'train/loss' in r)
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(workdir / 'tensorboard'))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['16', '8']
  assert (workdir / 'figures/loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'imgs/s' in proc.stderr and 'ETA' in proc.stderr  # the progress line


def test_mistyped_override_is_an_error(tmp_path):
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={tmp_path}',
                     '--config.train.learning_rat=0.1'])
  assert proc.returncode != 0 and 'learning_rat' in proc.stderr
