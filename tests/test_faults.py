"""Faults a cluster run meets: SIGKILL anywhere, preemption, NaN, bad configs, bad paths, bad images.

(Faults around the workdir, a checkpoint or the disk: tests/test_workdir_faults.py.)
"""

import glob
import os
import signal
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from ae import train
from ae.config_check import validate_config
from ae.errors import CheckpointError, ConfigError, NonFiniteLossError, QueryImageError
from conftest import final_params, popen_main, records, run_python, tiny_config
from eval.query_images import load_query_image


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
    p = popen_main(workdir)
    kills += _kill_when(p, make_trigger())
  p = popen_main(workdir)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-2000:]
  assert kills >= 3
  for a, b in zip(final_params(workdir), final_params(reference)):
    np.testing.assert_array_equal(a, b)
  got = [r['train/loss'] for r in records(workdir) if 'train/loss' in r]
  ref = [r['train/loss'] for r in records(reference) if 'train/loss' in r]
  assert got == ref


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(tmp_path, reference):
  workdir = tmp_path / 'run'
  p = popen_main(workdir, ['--config.train.checkpoint_every_steps=1000'])
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
  p = popen_main(workdir, ['--config.train.checkpoint_every_steps=1000'])
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0 and f'at step {step}' in err
  for a, b in zip(final_params(workdir), final_params(reference)):
    np.testing.assert_array_equal(a, b)


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
