"""CIFAR-10 as uint8 arrays from a local directory, tfds or a synthetic generator.

Every source returns the same `Dataset`: NHWC uint8 images and int32 labels. Faults
raise `DataError` with the offending path and the fix.
"""

import dataclasses
import os
import pickle
import socket

import numpy as np

from ae.errors import DataError

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer',
               'dog', 'frog', 'horse', 'ship', 'truck')
RECORD_BYTES = 1 + 32 * 32 * 3
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILE = 'test_batch'
TFDS_DOWNLOAD_HOST = 'www.cs.toronto.edu'  # where tfds downloads cifar10 from
SUBDIRS = ('', 'cifar-10-batches-bin', 'cifar-10-batches-py')
FIX = ('Point --config.data.dir (or the CIFAR10_DIR environment variable) at a directory '
       'holding the CIFAR-10 binary files data_batch_1.bin ... data_batch_5.bin and '
       'test_batch.bin (from cifar-10-binary.tar.gz), or use --config.data.source=synthetic '
       'for a smoke run.')


@dataclasses.dataclass(frozen=True)
class Dataset:
  train_images: np.ndarray  # N x 32 x 32 x 3 uint8
  train_labels: np.ndarray  # N int32
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple = CLASS_NAMES
  source: str = ''


def to_float(images_u8):
  """uint8 pixels to float32 in [0, 1] (NumPy or JAX arrays), as the report's division by 255."""
  return images_u8.astype(np.float32) / 255.0


def read_binary_batch(path):
  """Reads one CIFAR-10 binary file: records of 1 label byte + R, G, B planes."""
  size = os.path.getsize(path)
  if size == 0 or size % RECORD_BYTES:
    raise DataError(
        f'{path}: {size:,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 '
        f'records (an official batch is {10000 * RECORD_BYTES:,} bytes); the file is '
        f'truncated or not CIFAR-10 binary. Replace it with a fresh copy. {FIX}')
  raw = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
  labels = raw[:, 0].astype(np.int32)
  images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), _check_labels(labels, path)


class _Refused(pickle.UnpicklingError):
  """A pickle asked for a class or function the official batches never hold."""


class _BatchUnpickler(pickle.Unpickler):
  """Unpickles only what CIFAR-10 python batches hold: dicts, lists, bytes (_codecs.encode, as
  Python 3 pickles them), numbers, NumPy arrays and scalars. Shared data directories are written
  by many people, and a pickle runs whatever callable it names: any other is refused uncalled."""
  ALLOWED = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')} | {
      (f'numpy.{core}.multiarray', f) for core in ('core', '_core') for f in ('_reconstruct',
                                                                               'scalar')}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise _Refused(f'{module}.{name}')
    return super().find_class(module, name)


def read_pickle_batch(path):
  """Reads one CIFAR-10 python-pickle batch (dict with b'data' and b'labels'), running nothing
  the file names (_BatchUnpickler)."""
  try:
    with open(path, 'rb') as f:
      d = _BatchUnpickler(f, encoding='bytes').load()
    data = np.asarray(d[b'data'], dtype=np.uint8)
    labels = np.asarray(d[b'labels'], dtype=np.int64)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  except _Refused as e:
    raise DataError(f'{path}: refused: it calls {e}, which no CIFAR-10 batch does (nothing in it '
                    f'was run). Replace it with an official copy. {FIX}') from None
  except Exception as e:  # any unpickling or layout failure means the same fix
    raise DataError(f'{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e}). '
                    f'Replace it with a fresh copy. {FIX}') from e
  if len(labels) != len(images):
    raise DataError(f'{path}: {len(images)} images but {len(labels)} labels. {FIX}')
  return np.ascontiguousarray(images), _check_labels(labels, path)


def _check_labels(labels, path):
  bad = np.flatnonzero((labels < 0) | (labels > 9))
  if bad.size:
    raise DataError(f'{path}: label {int(labels[bad[0]])} at record {int(bad[0])} is outside '
                    f'0-9 ({bad.size} such records); the file is damaged or not CIFAR-10. {FIX}')
  return labels.astype(np.int32)


def _find_layout(root):
  """Returns (directory, suffix, reader) of the first complete layout under root."""
  if not os.path.exists(root):
    raise DataError(f'CIFAR-10 directory {root} does not exist. {FIX}')
  if not os.path.isdir(root):
    raise DataError(f'CIFAR-10 path {root} is a file, not a directory. {FIX}')
  seen = []
  for sub in SUBDIRS:
    d = os.path.join(root, sub)
    for suffix, reader in (('.bin', read_binary_batch), ('', read_pickle_batch)):
      names = [n + suffix for n in TRAIN_FILES + (TEST_FILE,)]
      present = [n for n in names if os.path.isfile(os.path.join(d, n))]
      if len(present) == len(names):
        return d, suffix, reader
      if present:
        seen.append((d, sorted(set(names) - set(present))))
  if seen:
    d, missing = seen[0]
    raise DataError(f'CIFAR-10 directory {d} is incomplete: missing '
                    f'{", ".join(os.path.join(d, m) for m in missing)}. {FIX}')
  raise DataError(f'CIFAR-10 directory {root} holds no CIFAR-10 batch files '
                  f'(looked for data_batch_1.bin ... test_batch.bin and the python layout). {FIX}')


def load_dir(root):
  d, suffix, reader = _find_layout(root)
  parts = [reader(os.path.join(d, n + suffix)) for n in TRAIN_FILES]
  train_images = np.concatenate([p[0] for p in parts])
  train_labels = np.concatenate([p[1] for p in parts])
  test_images, test_labels = reader(os.path.join(d, TEST_FILE + suffix))
  names = CLASS_NAMES
  meta = os.path.join(d, 'batches.meta.txt')
  if os.path.isfile(meta):
    with open(meta) as f:
      lines = tuple(l.strip() for l in f if l.strip())
    if len(lines) == 10:
      names = lines
  return Dataset(train_images, train_labels, test_images, test_labels, names, f'dir:{d}')


def _tfds_source(tfds, split, data_dir):
  """tfds's cifar10 split, downloaded and prepared first where it is not yet, but only if the
  download host resolves: offline, tfds retries its download for minutes before it fails."""
  try:
    return tfds.data_source('cifar10', split=split, data_dir=data_dir, download=False)
  except Exception:  # noqa: BLE001 (not prepared here: tfds raises several kinds)
    pass
  try:
    socket.getaddrinfo(TFDS_DOWNLOAD_HOST, 443)
  except OSError as e:
    raise DataError(f'tfds has no prepared cifar10 (in {data_dir or "~/tensorflow_datasets"}) and '
                    f'cannot download it: {TFDS_DOWNLOAD_HOST} does not resolve ({e}). Without '
                    f'network access tfds cannot download it. {FIX}') from None
  return tfds.data_source('cifar10', split=split, data_dir=data_dir)


def load_tfds(data_dir=''):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arrays = {}
  for split in ('train', 'test'):
    try:
      source = _tfds_source(tfds, split, data_dir or None)
      examples = [source[i] for i in range(len(source))]
    except DataError:
      raise
    except Exception as e:  # tfds raises many types for "not downloaded / no network"
      raise DataError(
          f'tfds could not load cifar10 split {split!r} ({type(e).__name__}: {e}). Without '
          f'network access tfds cannot download it. {FIX}') from e
    images = np.stack([np.asarray(ex['image'], np.uint8) for ex in examples])
    labels = np.array([int(ex['label']) for ex in examples], np.int64)
    arrays[split] = (images, _check_labels(labels, f'tfds cifar10/{split}'))
  return Dataset(*arrays['train'], *arrays['test'], CLASS_NAMES, 'tfds:cifar10')


def make_synthetic(num_train, num_test, seed=0):
  """Ten classes, each a fixed random 8x8 colour pattern (4x4-pixel blocks), times a per-image
  brightness, plus per-pixel uniform integer noise of std ~13 (0.05 of the range). Integer
  arithmetic on the 8x8 patterns: 60,000 images in 2-3 s on 2 CPU cores (float64 at full size: 13 s)."""
  rng = np.random.default_rng(seed)
  protos = rng.uniform(0.15, 0.85, size=(10, 8, 8, 3))

  def draw(n):
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    base = np.rint(protos[labels] * (255 * rng.uniform(0.7, 1.3, size=(n, 1, 1, 1))))
    x = rng.integers(-22, 23, size=(n, 8, 4, 8, 4, 3), dtype=np.int16)
    x += base.astype(np.int16)[:, :, None, :, None, :]
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 32, 32, 3), labels

  return Dataset(*draw(num_train), *draw(num_test), CLASS_NAMES, 'synthetic')


def resolve_source(data_config):
  """Returns (source, directory) after applying the 'auto' rule."""
  source = data_config.source
  if source == 'auto':
    d = data_config.dir or os.environ.get('CIFAR10_DIR', '')
    return ('dir', d) if d else ('tfds', '')
  if source == 'dir':
    d = data_config.dir or os.environ.get('CIFAR10_DIR', '')
    if not d:
      raise DataError(f'data.source=dir needs data.dir or CIFAR10_DIR to be set. {FIX}')
    return source, d
  if source in ('tfds', 'synthetic'):
    return source, ''
  raise DataError(f"data.source must be 'auto', 'dir', 'tfds' or 'synthetic', got {source!r}")


def load_dataset(data_config, seed=0) -> Dataset:
  """Loads the configured source and takes the first num_train / num_test images."""
  source, d = resolve_source(data_config)
  if source == 'dir':
    ds = load_dir(d)
  elif source == 'tfds':
    ds = load_tfds(data_config.tfds_dir)
  else:
    ds = make_synthetic(data_config.synthetic_train, data_config.synthetic_test, seed)
  n_tr = data_config.num_train or len(ds.train_images)
  n_te = data_config.num_test or len(ds.test_images)
  if n_tr > len(ds.train_images) or n_te > len(ds.test_images):
    raise DataError(f'asked for {n_tr} train / {n_te} test images but {ds.source} has '
                    f'{len(ds.train_images)} / {len(ds.test_images)}; lower data.num_train '
                    f'or data.num_test (0 = all).')
  return dataclasses.replace(ds, train_images=ds.train_images[:n_tr],
                             train_labels=ds.train_labels[:n_tr],
                             test_images=ds.test_images[:n_te], test_labels=ds.test_labels[:n_te])
