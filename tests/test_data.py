import os
import pickle
import socket

import numpy as np
import pytest

from ae import data
from ae.data import DataError
from conftest import tiny_config


def write_binary(path, images, labels):
  """CIFAR-10 binary records: label byte, then the R, G and B planes row by row."""
  planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
  np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tofile(path)


def make_binary_dir(root, n=4, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  truth = {}
  for name in data.TRAIN_FILES + (data.TEST_FILE,):
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    write_binary(os.path.join(root, name + '.bin'), images, labels)
    truth[name] = (images, labels)
  return truth


def test_binary_reader_against_a_file_built_here(tmp_path):
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[0, 0, 1, 0] = 7    # red, row 0, col 1
  images[0, 2, 0, 1] = 9    # green, row 2, col 0
  images[1, 31, 31, 2] = 255  # blue, last pixel
  path = tmp_path / 'b.bin'
  raw = np.zeros((2, data.RECORD_BYTES), np.uint8)
  raw[:, 0] = [3, 8]
  raw[0, 1 + 1] = 7                       # R plane offset 0*1024 + row 0*32 + col 1
  raw[0, 1 + 1024 + 2 * 32] = 9           # G plane, row 2, col 0
  raw[1, 1 + 2048 + 31 * 32 + 31] = 255   # B plane, last
  raw.tofile(path)
  got_images, got_labels = data.read_binary_batch(str(path))
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, [3, 8])


def test_directory_of_binary_batches_loads_in_order(tmp_path):
  truth = make_binary_dir(tmp_path)
  ds = data.load_dir(str(tmp_path))
  np.testing.assert_array_equal(ds.train_images[4:8], truth['data_batch_2'][0])
  np.testing.assert_array_equal(ds.train_labels[:4], truth['data_batch_1'][1])
  np.testing.assert_array_equal(ds.test_images, truth['test_batch'][0])
  assert ds.train_images.shape == (20, 32, 32, 3) and ds.train_images.dtype == np.uint8


def test_python_pickle_layout(tmp_path):
  rng = np.random.default_rng(1)
  truth = {}
  for name in data.TRAIN_FILES + (data.TEST_FILE,):
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    labels = list(rng.integers(0, 10, 3))
    with open(tmp_path / name, 'wb') as f:
      pickle.dump({b'data': images.transpose(0, 3, 1, 2).reshape(3, -1), b'labels': labels}, f)
    truth[name] = images
  ds = data.load_dir(str(tmp_path))
  np.testing.assert_array_equal(ds.test_images, truth['test_batch'])
  np.testing.assert_array_equal(ds.train_images[3:6], truth['data_batch_2'])


class _Payload:
  """Unpickles into a call of open(path, 'w'): a file that appears when the pickle is run."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return open, (self.path, 'w')


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
  rng = np.random.default_rng(2)
  marker = tmp_path / 'payload_ran'
  for name in data.TRAIN_FILES + (data.TEST_FILE,):
    batch = {b'data': rng.integers(0, 256, (2, 3072), dtype=np.uint8), b'labels': [1, 2]}
    if name == 'data_batch_3':
      batch[b'labels'] = _Payload(str(marker))
    with open(tmp_path / name, 'wb') as f:
      pickle.dump(batch, f)
  with pytest.raises(DataError, match=r'data_batch_3: refused: it calls (io|builtins)\.open') as e:
    data.load_dir(str(tmp_path))
  assert 'CIFAR10_DIR' in str(e.value)
  assert not marker.exists()  # the payload never ran


def test_subset_and_float_conversion(tmp_path):
  make_binary_dir(tmp_path, n=5)
  config = tiny_config(data__source='dir', data__dir=str(tmp_path), data__num_train=7,
                       data__num_test=2)
  ds = data.load_dataset(config.data)
  assert len(ds.train_images) == 7 and len(ds.test_labels) == 2
  x = np.asarray(data.to_float(ds.train_images))
  np.testing.assert_allclose(x, ds.train_images / 255.0, rtol=1e-6)


def test_auto_uses_the_environment_variable(tmp_path, monkeypatch):
  make_binary_dir(tmp_path)
  monkeypatch.setenv('CIFAR10_DIR', str(tmp_path))
  assert data.resolve_source(tiny_config(data__source='auto').data) == ('dir', str(tmp_path))
  monkeypatch.delenv('CIFAR10_DIR')
  assert data.resolve_source(tiny_config(data__source='auto').data) == ('tfds', '')


@pytest.mark.parametrize('fault', ['missing_dir', 'path_is_file', 'empty_dir', 'missing_batch',
                                   'missing_test', 'truncated', 'wrong_size', 'bad_label'])
def test_bad_directories_raise_a_clear_error_naming_the_path(tmp_path, fault):
  root = tmp_path / 'cifar'
  make_binary_dir(root)
  target = root
  if fault == 'missing_dir':
    target = tmp_path / 'nope'
    expect = 'does not exist'
  elif fault == 'path_is_file':
    target = root / 'data_batch_1.bin'
    expect = 'is a file'
  elif fault == 'empty_dir':
    target = tmp_path / 'empty'
    target.mkdir()
    expect = 'holds no CIFAR-10 batch files'
  elif fault == 'missing_batch':
    os.remove(root / 'data_batch_3.bin')
    expect = 'data_batch_3.bin'
  elif fault == 'missing_test':
    os.remove(root / 'test_batch.bin')
    expect = 'test_batch.bin'
  elif fault in ('truncated', 'wrong_size'):
    path = root / 'data_batch_2.bin'
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] if fault == 'truncated' else raw + b'\0' * 10)
    expect = 'data_batch_2.bin'
  else:
    path = root / 'data_batch_4.bin'
    raw = bytearray(path.read_bytes())
    raw[data.RECORD_BYTES] = 12  # second record's label
    path.write_bytes(bytes(raw))
    expect = 'label 12 at record 1'
  with pytest.raises(DataError) as e:
    data.load_dir(str(target))
  assert expect in str(e.value)
  assert 'CIFAR10_DIR' in str(e.value)  # says how to fix it


def test_tfds_source_through_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset(tiny_config(data__source='tfds').data)
  assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.test_labels.shape == (12,) and ds.test_labels.max() <= 9
  assert ds.source == 'tfds:cifar10'


def test_tfds_failure_says_how_to_use_local_files(monkeypatch):
  import tensorflow_datasets as tfds

  def refuse(*args, **kwargs):
    raise ConnectionError('network unreachable')

  monkeypatch.setattr(tfds, 'data_source', refuse)
  monkeypatch.setattr(data.socket, 'getaddrinfo', lambda *args: [])  # the host resolves
  with pytest.raises(DataError) as e:
    data.load_tfds()
  assert 'network unreachable' in str(e.value) and 'CIFAR10_DIR' in str(e.value)


def test_tfds_without_its_data_or_a_network_fails_at_once(monkeypatch, tmp_path):
  """No prepared cifar10 and a download host that does not resolve: an error at once, never
  tfds's download (which retries for minutes offline)."""
  import tensorflow_datasets as tfds
  downloads, real = [], tfds.data_source

  def source(*args, download=True, **kwargs):
    if download:
      downloads.append(args)
      raise AssertionError('tfds was asked to download')
    return real(*args, download=False, **kwargs)

  def unresolved(host, *args):
    raise socket.gaierror(socket.EAI_NONAME, f'{host}: Name or service not known')

  monkeypatch.setattr(tfds, 'data_source', source)
  monkeypatch.setattr(data.socket, 'getaddrinfo', unresolved)
  with pytest.raises(DataError, match='cannot download it: www.cs.toronto.edu does not resolve') as e:
    data.load_tfds(str(tmp_path / 'tfds'))
  assert 'CIFAR10_DIR' in str(e.value) and not downloads


def test_synthetic_source_is_labelled_and_deterministic():
  a = data.make_synthetic(50, 10, seed=3)
  b = data.make_synthetic(50, 10, seed=3)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert set(np.unique(a.train_labels)) <= set(range(10))
  # same-class images are closer than other-class images on average
  x = a.train_images.reshape(50, -1).astype(float)
  d = ((x[:, None] - x[None]) ** 2).sum(-1)
  same = a.train_labels[:, None] == a.train_labels[None]
  assert d[same & ~np.eye(50, dtype=bool)].mean() < d[~same].mean()


def test_real_cifar10_directory(cifar10_dir):
  ds = data.load_dir(cifar10_dir)
  assert ds.train_images.shape == (50000, 32, 32, 3) and ds.test_images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(ds.train_labels[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
  np.testing.assert_array_equal(ds.test_labels[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
  np.testing.assert_array_equal(ds.train_images[0, 0, :2, 0], [59, 43])
