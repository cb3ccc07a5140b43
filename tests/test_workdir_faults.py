"""Faults around a run's workdir: a second run on it, a damaged checkpoint, a full disk, and
SIGTERM during the evaluation."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ae import train
from ae.errors import CheckpointError
from conftest import (FAULT_ARGS, ROOT, final_params, popen_main, records, run_python,
                      tiny_config)


def test_a_second_run_on_a_held_workdir_stops_at_once_and_the_first_loses_nothing(tmp_path,
                                                                                  reference):
  workdir = tmp_path / 'run'
  first = popen_main(workdir)
  lock, metrics = workdir / '.lock', workdir / 'metrics.jsonl'
  while first.poll() is None and not (lock.exists() and f'pid {first.pid}' in lock.read_text()
                                      or metrics.exists() and metrics.stat().st_size):
    time.sleep(0.01)
  first.send_signal(signal.SIGSTOP)  # it holds the workdir: keep it there while the second starts
  try:
    second = popen_main(workdir)
    _, err = second.communicate(timeout=120)
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode == 1
  assert f'workdir {workdir} is in use by another run' in err
  assert f'pid {first.pid}' in err and 'another --workdir' in err
  assert 'Traceback' not in err
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-2000:]
  timing = ('imgs_per_s', 'epoch_time_s', 'epoch_imgs_per_s')
  untimed = lambda d: [{k: v for k, v in r.items() if k not in timing} for r in records(d)]
  assert untimed(workdir) == untimed(reference)  # every record, once
  for a, b in zip(final_params(workdir), final_params(reference)):
    np.testing.assert_array_equal(a, b)


def _damage(step_dir, part):
  """Cuts a checkpoint's array data files ('data') or every file ('all') in half, as a copy or a
  write cut short leaves them."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if part == 'all' or f'{os.sep}d{os.sep}' in path:
        os.truncate(path, os.path.getsize(path) // 2)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    tmp_path, reference):
  workdir = shutil.copytree(reference, tmp_path / 'run')  # a finished run, as a requeue finds it
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['24', '28', '32']
  _damage(workdir / 'checkpoints' / '32', 'data')  # (the next test damages every file)
  p = popen_main(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  assert f"the checkpoint of step 32 ({workdir / 'checkpoints' / '32'}) does not restore" in err
  assert 'at step 28' in err and 'Fatal' not in err
  (moved,) = os.listdir(workdir / 'damaged_checkpoints')
  assert moved.startswith('32.')
  for a, b in zip(final_params(workdir), final_params(reference)):
    np.testing.assert_array_equal(a, b)
  for key in ('train/loss', 'test/mse'):  # (an epoch's mean loss counts the steps run since)
    assert [r[key] for r in records(workdir) if key in r] == [
        r[key] for r in records(reference) if key in r]


def test_evaluation_and_init_from_fall_back_too_and_no_restorable_checkpoint_is_an_error(
    tmp_path, caplog):
  from ae import checkpoint as ckpt, parallel  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  train.train(tiny_config(train__checkpoint_every_steps=4), str(workdir))
  _damage(workdir / 'checkpoints' / '16', 'data')
  _, step = ckpt.load_params(tiny_config().model, str(workdir), parallel.make_mesh())
  assert step == 12  # --mode=eval and --mode=query
  with caplog.at_level('INFO'):
    train.train(tiny_config(train__init_from=str(workdir), train__num_epochs=1),
                str(tmp_path / 'child'))
  assert 'step 16' in caplog.text and '(step 12); fresh optimizer' in caplog.text
  for step in ('8', '12'):
    _damage(workdir / 'checkpoints' / step, 'all')
  with pytest.raises(CheckpointError, match=r'no checkpoint restores \(steps 16, 12, 8 in .* are '
                                            r'damaged\)\. Restore a copy'):
    ckpt.load_params(tiny_config().model, str(workdir), parallel.make_mesh())


FULL_DISK_LINE = re.compile(r'^error: no space left on the device writing (.+); the last complete '
                            r'checkpoint is step (\d+) in (.+)\. Free some space, then run the same '
                            r'command again to continue from there\.$', re.M)


def _finishes_like_the_reference(workdir, reference, resumed_at):
  p = popen_main(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  assert f'at step {resumed_at}' in err
  for a, b in zip(final_params(workdir), final_params(reference)):
    np.testing.assert_array_equal(a, b)
  assert [r['train/loss'] for r in records(workdir) if 'train/loss' in r] == [
      r['train/loss'] for r in records(reference) if 'train/loss' in r]


def test_a_full_disk_is_one_clear_line_and_a_rerun_after_freeing_space_finishes(tmp_path,
                                                                                reference):
  disk = tmp_path / 'disk'
  disk.mkdir()
  mount = ['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', str(disk)]
  if subprocess.run(mount, capture_output=True, check=False).returncode:
    pytest.skip('no tmpfs can be mounted here (test_our_writes_to_a_full_disk... covers those)')
  try:
    workdir = disk / 'run'
    p = popen_main(workdir)  # 3 checkpoints of ~2.5 MB do not fit in 6 MB
    _, err = p.communicate(timeout=600)
    assert p.returncode == 1
    (line,) = FULL_DISK_LINE.finditer(err)
    written, last, ckpt_dir = line.groups()
    assert written.startswith('the checkpoint of step ') and int(written.split()[-1]) > int(last)
    assert ckpt_dir == str(workdir / 'checkpoints') and 'Traceback' not in err
    subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
    _finishes_like_the_reference(workdir, reference, resumed_at=int(last))
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=False)


FULL_FILE = """
import builtins, errno, os
_open, _target = builtins.open, os.environ['AE_TEST_FULL_FILE']
_left = [int(os.environ['AE_TEST_WRITES_BEFORE_FULL'])]


class _Full:  # the file's writes succeed until the disk is full
  def __init__(self, f):
    self._f = f

  def write(self, data):
    if _left[0] <= 0:
      raise OSError(errno.ENOSPC, 'No space left on device')
    _left[0] -= 1
    return self._f.write(data)

  def __getattr__(self, name):
    return getattr(self._f, name)


def _open_filling(file, mode='r', *args, **kwargs):
  f = _open(file, mode, *args, **kwargs)
  return _Full(f) if str(file).endswith(_target) and set(mode) & set('aw') else f


builtins.open = _open_filling
"""


def test_our_writes_to_a_full_disk_are_one_clear_line_too(tmp_path, reference):
  """The disk fills under metrics.jsonl (ENOSPC injected into its writes at the file layer)."""
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(FULL_FILE)
  workdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), ROOT]),
             AE_TEST_FULL_FILE='metrics.jsonl', AE_TEST_WRITES_BEFORE_FULL='5')
  p = subprocess.run([sys.executable] + FAULT_ARGS + [f'--workdir={workdir}'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 1
  (line,) = FULL_DISK_LINE.finditer(p.stderr)
  written, last, _ = line.groups()
  assert written == str(workdir / 'metrics.jsonl') and int(last) > 0
  assert 'Traceback' not in p.stderr
  _finishes_like_the_reference(workdir, reference, resumed_at=int(last))


def test_sigterm_during_the_evaluation_ends_cleanly_and_the_rerun_evaluates(tmp_path, reference):
  workdir = shutil.copytree(reference, tmp_path / 'run')  # trained: the run goes on to evaluate
  loss_curves = workdir / 'figures' / 'loss.png'  # drawn as the evaluation begins
  assert not loss_curves.exists()
  args = FAULT_ARGS + ['--config.eval.enabled=True', '--config.eval.umap_points=0',
                 "--config.eval.metrics=('euclidean',)", f'--workdir={workdir}']
  env = dict(os.environ, PYTHONPATH=ROOT)
  p = subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  while p.poll() is None and not loss_curves.exists():
    time.sleep(0.01)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-2000:]
  assert 'stopped cleanly: SIGTERM during the evaluation' in err and 'Traceback' not in err
  assert not (workdir / 'results.json').exists()
  proc = run_python(args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'at step 32' in proc.stderr and (workdir / 'results.json').exists()
