"""On the real CIFAR-10 (CIFAR10_DIR): one epoch of the default model already reconstructs the
test images far better than the mean training image does."""

import numpy as np
import pytest

from ae import train
from ae.data import load_dataset
from ae.metrics_log import read_records
from configs import default


@pytest.mark.slow  # trains the default model on real images for half a minute
def test_one_epoch_on_5k_images_beats_the_mean_image(tmp_path, cifar10_dir):
  config = default.get_config()
  config.data.source = 'dir'
  config.data.dir = cifar10_dir
  config.data.num_train, config.data.num_test = 5000, 2000
  config.train.num_epochs = 1
  config.eval.enabled = False
  train.train(config, str(tmp_path))
  (epoch,) = [r for r in read_records(str(tmp_path / 'metrics.jsonl')) if 'test/mse' in r]
  ds = load_dataset(config.data)
  mean_image = ds.train_images.astype(np.float64).mean(axis=0) / 255
  mean_mse = np.mean((ds.test_images / 255 - mean_image) ** 2)
  assert 0.05 < mean_mse < 0.08  # (0.062 on the whole sets)
  assert epoch['test/mse'] < 0.7 * mean_mse, (epoch, mean_mse)
