"""What a finished run leaves for TensorBoard, read by TensorBoard's own code: its event reader for
the per-epoch reconstruction images."""

import io

import jax
import numpy as np
from PIL import Image

from tensorboard.backend.event_processing import event_accumulator

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
