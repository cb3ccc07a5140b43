"""On the real CIFAR-10 (CIFAR10_DIR): one epoch of the seed's model already beats the mean image."""

from ae import train
from ae.metrics_log import read_records
from configs import default


def test_one_epoch_on_10k_images_beats_the_mean_image(tmp_path, cifar10_dir):
  config = default.get_config()
  config.data.source = 'dir'
  config.data.dir = cifar10_dir
  config.data.num_train = 10000
  config.train.num_epochs = 1
  config.eval.enabled = False
  train.train(config, str(tmp_path))
  (epoch,) = [r for r in read_records(str(tmp_path / 'metrics.jsonl')) if 'test/mse' in r]
  assert epoch['test/mse'] < 0.035, epoch  # the mean training image gives 0.062
