"""Faults a cluster run meets: SIGKILL anywhere, preemption, NaN, bad configs, bad paths, bad images."""

import glob
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from ae import train
from ae.config_check import validate_config
from ae.errors import CheckpointError, ConfigError, NonFiniteLossError, QueryImageError
from conftest import ROOT, run_python, tiny_config
from eval.query_images import load_query_image

ARGS = ['main.py', '--config=configs/test.py', '--config.eval.enabled=False',
        '--config.train.num_epochs=4', '--config.train.checkpoint_every_steps=4']


def _popen(workdir, extra=()):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable] + ARGS + [f'--workdir={workdir}'] + list(extra), cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_params(workdir):
  import jax  # pylint: disable=g-import-not-at-top
  from ae import checkpoint as ckpt, parallel  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  params, step = ckpt.load_params(test_config.get_config().model, str(workdir),
                                  parallel.make_mesh())
  assert step == 32
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _records(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  records = [json.loads(l) for l in lines]  # a torn line would raise here
  keys = [(r['step'], 'test/mse' in r) for r in records]
  assert len(keys) == len(set(keys)), 'duplicated records'
  return records


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('ref')
  p = _popen(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-2000:]
  return workdir


def _kill_when(p, condition, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline and p.poll() is None:
    if condition():
      p.send_signal(signal.SIGKILL)
      p.wait()
      return True
    time.sleep(0.002)
  p.wait()
  return False


def test_sigkill_anywhere_then_restart_gives_the_uninterrupted_result(tmp_path, reference):
  workdir = tmp_path / 'run'
  ckpt_dir = workdir / 'checkpoints'
  metrics = workdir / 'metrics.jsonl'
  rng = np.random.default_rng(0)
  kills = 0

  def writing_checkpoint():  # orbax's temporary directory exists only while it writes
    return bool(glob.glob(str(ckpt_dir / '*tmp*')))

  def after(seconds, also=lambda: True):
    start = time.time()
    return lambda: time.time() - start > seconds and also()

  def training():
    return metrics.exists() and metrics.stat().st_size > 0

  triggers = [
      lambda: writing_checkpoint,
      lambda: after(rng.uniform(0.0, 1.0), training),  # a random moment while training
      lambda: writing_checkpoint,
      lambda: after(rng.uniform(0.5, 3.0)),  # a random moment, possibly during start-up
  ]
  for make_trigger in triggers:
    p = _popen(workdir)
    kills += _kill_when(p, make_trigger())
  p = _popen(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-2000:]
  assert kills >= 3
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)
  got = [r['train/loss'] for r in _records(workdir) if 'train/loss' in r]
  ref = [r['train/loss'] for r in _records(reference) if 'train/loss' in r]
  assert got == ref


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(tmp_path, reference):
  workdir = tmp_path / 'run'
  p = _popen(workdir, ['--config.train.checkpoint_every_steps=1000'])
  metrics = workdir / 'metrics.jsonl'
  while p.poll() is None and not (metrics.exists() and metrics.stat().st_size):
    time.sleep(0.01)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-2000:]
  assert 'SIGTERM received: saved a checkpoint at step' in err
  step = int(err.split('saved a checkpoint at step ')[1].split()[0])
  assert 0 < step < 32
  assert os.listdir(workdir / 'checkpoints') == [str(step)]
  p = _popen(workdir, ['--config.train.checkpoint_every_steps=1000'])
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0 and f'at step {step}' in err
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)


def test_a_second_run_on_a_held_workdir_stops_at_once_and_the_first_loses_nothing(tmp_path,
                                                                                  reference):
  workdir = tmp_path / 'run'
  first = _popen(workdir)
  lock, metrics = workdir / '.lock', workdir / 'metrics.jsonl'
  while first.poll() is None and not (lock.exists() and f'pid {first.pid}' in lock.read_text()
                                      or metrics.exists() and metrics.stat().st_size):
    time.sleep(0.01)
  first.send_signal(signal.SIGSTOP)  # it holds the workdir: keep it there while the second starts
  try:
    second = _popen(workdir)
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
  untimed = lambda d: [{k: v for k, v in r.items() if k not in timing} for r in _records(d)]
  assert untimed(workdir) == untimed(reference)  # every record, once
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)


def _damage(step_dir, part):
  """Cuts a checkpoint's array data files ('data') or every file ('all') in half, as a copy or a
  write cut short leaves them."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if part == 'all' or f'{os.sep}d{os.sep}' in path:
        os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize('part', ['data', 'all'])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    tmp_path, reference, part):
  workdir = tmp_path / 'run'
  p = _popen(workdir, ['--config.train.num_epochs=2'])
  assert p.wait(timeout=600) == 0
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['12', '16', '8']
  _damage(workdir / 'checkpoints' / '16', part)
  p = _popen(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  assert f"the checkpoint of step 16 ({workdir / 'checkpoints' / '16'}) does not restore" in err
  assert 'at step 12' in err and 'Fatal' not in err
  (moved,) = os.listdir(workdir / 'damaged_checkpoints')
  assert moved.startswith('16.')
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)
  for key in ('train/loss', 'test/mse'):  # (an epoch's mean loss counts the steps run since)
    assert [r[key] for r in _records(workdir) if key in r] == [
        r[key] for r in _records(reference) if key in r]


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
  p = _popen(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  assert f'at step {resumed_at}' in err
  for a, b in zip(_final_params(workdir), _final_params(reference)):
    np.testing.assert_array_equal(a, b)
  assert [r['train/loss'] for r in _records(workdir) if 'train/loss' in r] == [
      r['train/loss'] for r in _records(reference) if 'train/loss' in r]


def test_a_full_disk_is_one_clear_line_and_a_rerun_after_freeing_space_finishes(tmp_path,
                                                                                reference):
  disk = tmp_path / 'disk'
  disk.mkdir()
  mount = ['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', str(disk)]
  if subprocess.run(mount, capture_output=True, check=False).returncode:
    pytest.skip('no tmpfs can be mounted here (test_our_writes_to_a_full_disk... covers those)')
  try:
    workdir = disk / 'run'
    p = _popen(workdir)  # 3 checkpoints of ~2.5 MB do not fit in 6 MB
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
  p = subprocess.run([sys.executable] + ARGS + [f'--workdir={workdir}'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 1
  (line,) = FULL_DISK_LINE.finditer(p.stderr)
  written, last, _ = line.groups()
  assert written == str(workdir / 'metrics.jsonl') and int(last) > 0
  assert 'Traceback' not in p.stderr
  _finishes_like_the_reference(workdir, reference, resumed_at=int(last))


def test_sigterm_during_the_evaluation_ends_cleanly_and_the_rerun_evaluates(tmp_path):
  workdir = tmp_path / 'run'
  args = ['main.py', '--config=configs/test.py', '--config.train.num_epochs=1',
          f'--workdir={workdir}']
  env = dict(os.environ, PYTHONPATH=ROOT)
  p = subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  loss_curves = workdir / 'figures' / 'loss.png'  # drawn as the evaluation begins
  while p.poll() is None and not loss_curves.exists():
    time.sleep(0.01)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-2000:]
  assert 'stopped cleanly: SIGTERM during the evaluation' in err and 'Traceback' not in err
  assert not (workdir / 'results.json').exists()
  proc = run_python(args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'at step 8' in proc.stderr and (workdir / 'results.json').exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train(tiny_config(train__num_epochs=1, train__checkpoint_every_steps=4), workdir)
  before = os.stat(os.path.join(workdir, 'checkpoints', '8', 'params'))
  with pytest.raises(NonFiniteLossError, match='loss is nan at step .*learning_rate=1e\\+30'):
    train.train(tiny_config(train__checkpoint_every_steps=4, train__learning_rate=1e30), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']  # none after
  assert os.stat(os.path.join(workdir, 'checkpoints', '8', 'params')).st_mtime == before.st_mtime


@pytest.mark.parametrize('field,value,message', [
    ('train__noise_std', -0.1, 'noise_std must be >= 0'),
    ('model__latent_dim', 0, 'latent_dim must be at least 1'),
    ('train__batch_size', 0, 'batch_size must be at least 1'),
    ('train__num_epochs', 0, 'num_epochs must be at least 1'),
    ('model__decoder', 'gan', 'model.decoder must be one of'),
    ('eval__metrics', ('euclidean', 'hamming'), 'eval.metrics'),
    ('eval__refine_lr', 0.0, 'eval.refine_lr must be > 0'),
    ('model__encoder_dense', (512, 0), 'model.encoder_dense must be a tuple of positive'),
    ('train__random_shift', 9, 'train.random_shift must be in'),
    ('model__encoder_dropout', 1.0, 'model.encoder_dropout must be in'),
])
def test_invalid_values_fail_before_any_data_is_loaded(tmp_path, field, value, message):
  # data.dir does not exist: reaching the data loader would raise a DataError instead
  config = tiny_config(**{field: value}, data__source='dir', data__dir=str(tmp_path / 'none'))
  with pytest.raises(ConfigError, match=message):
    train.train(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_batch_not_divisible_by_devices():
  with pytest.raises(ConfigError, match='not divisible by the 4 devices'):
    validate_config(tiny_config(train__batch_size=30), num_devices=4)


def test_workdir_checkpoint_of_another_model_shape(tmp_path):
  workdir = tmp_path / 'run'
  train.train(tiny_config(train__num_epochs=1), str(workdir))
  config = tiny_config(model__encoder_features=(8, 16, 32), data__source='dir',
                       data__dir=str(tmp_path / 'none'))
  with pytest.raises(CheckpointError, match='different model'):
    train.train(config, str(workdir))


@pytest.mark.parametrize('flag,message', [
    ('--config.train.batch_sise=3', 'batch_sise'),           # unknown field
    ('--config.train.batch_size=abc', 'batch_size'),          # wrong type
    ('--config.train.noise_std=-1', 'noise_std must be >= 0'),
    ('--config.train.init_from=/nonexistent/run', 'no checkpoint directory at /nonexistent/run'),
])
def test_main_exits_non_zero_with_the_reason(tmp_path, flag, message):
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={tmp_path / "run"}', flag])
  assert proc.returncode != 0
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr or flag.endswith(('sise=3', '=abc'))


def test_unwritable_workdir_names_the_path(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(CheckpointError, match=f'workdir {blocker}/run is not writable'):
    train.train(tiny_config(), str(blocker / 'run'))


def _png_header_only(path, width, height):
  """A PNG whose header claims width x height; no pixel data follows."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b''))


def test_query_input_faults_are_clear_errors(tmp_path):
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'random.png').write_bytes(np.random.default_rng(0).bytes(500))
  Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 90).save(tmp_path / 'ok.png')
  (tmp_path / 'truncated.png').write_bytes((tmp_path / 'ok.png').read_bytes()[:60])
  _png_header_only(tmp_path / 'huge.png', 20000, 20000)
  (tmp_path / 'folder').mkdir()
  cases = {'empty.png': 'is empty', 'random.png': 'not a readable', 'truncated.png': 'not a readable',
           'huge.png': 'over the limit of 16,777,216', 'folder': 'is a directory',
           'missing.png': 'does not exist'}
  for name, message in cases.items():
    with pytest.raises(QueryImageError, match=message) as e:
      load_query_image(str(tmp_path / name), 4096 * 4096)
    assert name in str(e.value)
  img, note = load_query_image(str(tmp_path / 'ok.png'), 4096 * 4096)
  assert img.shape == (32, 32, 3) and note == ''


def test_fewer_images_than_one_batch_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match='fewer than train.batch_size=32'):
    train.train(tiny_config(data__synthetic_train=20), str(tmp_path / 'run'))
