"""What a finished run leaves for TensorBoard, read by TensorBoard's own code: its event reader for
the per-epoch reconstruction images, its Projector plugin (served as `tensorboard` serves it) for
the embedding of the test codes."""

import io
import json

import jax
import numpy as np
import pytest
from PIL import Image

from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.projector import projector_plugin
from werkzeug import test as werkzeug_test

from ae import checkpoint as ckpt
from ae import parallel, rng
from ae.augment import noisy_copies
from ae.data import load_dataset
from ae.image_summaries import NUM_IMAGES
from ae.metrics_log import read_records
from ae.model import create_model
from configs import test as test_config


def _rows(png, num_rows):
  """A grid image split into rows of NUM_IMAGES 32x32 images, [R, N, 32, 32, 3] uint8."""
  grid = np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
  assert grid.shape == (num_rows * 32, NUM_IMAGES * 32, 3)
  return grid.reshape(num_rows, 32, NUM_IMAGES, 32, 3).transpose(0, 2, 1, 3, 4)


def test_every_epoch_has_the_reconstructions_of_the_fixed_test_images(run_dir):
  acc = event_accumulator.EventAccumulator(str(run_dir / 'tensorboard'),
                                           size_guidance={event_accumulator.IMAGES: 0})
  acc.Reload()
  tags = acc.Tags()[event_accumulator.IMAGES]
  assert sorted(tags) == ['reconstructions/noisy_test', 'reconstructions/test']
  epoch_steps = [r['step'] for r in read_records(run_dir / 'metrics.jsonl') if 'test/mse' in r]
  for tag in tags:
    assert [e.step for e in acc.Images(tag)] == epoch_steps

  # The last epoch's grids against the checkpoint's model rebuilt from plain flax layers.
  config = test_config.get_config()
  config.model.conv_impl = 'flax'
  params, step = ckpt.load_params(config.model, str(run_dir), parallel.make_mesh())
  assert step == epoch_steps[-1]
  model = create_model(config.model, 'cpu')
  x_u8 = load_dataset(config.data, config.seed).test_images[:NUM_IMAGES]
  x = x_u8.astype(np.float32) / 255
  noisy = np.asarray(noisy_copies(x, np.arange(NUM_IMAGES), rng.stream(config.seed, rng.EVAL_NOISE),
                                  config.train.noise_std))
  apply = jax.jit(model.apply)
  expected = {'reconstructions/test': (x, apply(params, x)),
              'reconstructions/noisy_test': (noisy, apply(params, noisy))}
  for tag, (inputs, recon) in expected.items():
    rows = _rows(acc.Images(tag)[-1].encoded_image_string, 2).astype(int)
    for got, want in zip(rows, (inputs, recon)):
      want = np.round(np.clip(np.asarray(want), 0, 1) * 255)
      assert np.abs(got - want).max() <= 1, tag  # rounding of float differences
  first, last = (_rows(acc.Images('reconstructions/test')[i].encoded_image_string, 2)
                 for i in (0, -1))
  np.testing.assert_array_equal(last[0], x_u8)  # the test images themselves
  assert not np.array_equal(first[1], last[1])  # the reconstructions changed between epochs


@pytest.fixture(scope='module')
def projector(run_dir):
  """The run's folder served by TensorBoard's Projector plugin, as `tensorboard --logdir` would."""
  logdir = str(run_dir.parent)
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  context = base_plugin.TBContext(
      logdir=logdir, data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir))
  client = werkzeug_test.Client(application.TensorBoardWSGI(
      [projector_plugin.ProjectorPlugin(context)]))

  def get(route, **args):
    response = client.get(f'/data/plugin/projector/{route}', query_string=args)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data()

  return get


def test_projector_serves_the_test_codes_with_classes_and_images(run_dir, projector):
  run = f'{run_dir.name}/tensorboard'
  assert json.loads(projector('runs')) == [run]
  (embedding,) = json.loads(projector('info', run=run))['embeddings']
  name = embedding['tensorName']
  with np.load(run_dir / 'embeddings.npz') as f:
    z, labels = f['test_z'], f['test_labels']
  codes = np.frombuffer(projector('tensor', run=run, name=name), np.float32)
  np.testing.assert_array_equal(codes.reshape(z.shape), z)
  ds = load_dataset(test_config.get_config().data)
  metadata = projector('metadata', run=run, name=name).decode().splitlines()
  assert metadata[0] == 'test_index\tclass'
  assert metadata[1:] == [f'{i}\t{ds.class_names[c]}' for i, c in enumerate(labels)]
  assert embedding['sprite']['singleImageDim'] == [32, 32]
  sprite = np.asarray(Image.open(io.BytesIO(projector('sprite_image', run=run, name=name))))
  side = int(np.ceil(np.sqrt(len(z))))
  assert sprite.shape == (side * 32, side * 32, 3)
  for i in (0, 1, side, len(z) - 1):  # image i at row i // side, column i % side
    r, c = divmod(i, side)
    np.testing.assert_array_equal(sprite[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32], ds.test_images[i])
  assert json.loads((run_dir / 'results.json').read_text())['projector_points'] == len(z)
  assert f'the codes of the first {len(z)} test images' in (run_dir / 'report.md').read_text()
  assert not list(run_dir.glob('tensorboard/**/*.tmp'))  # written whole, through a rename
