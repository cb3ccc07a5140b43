"""A tiny model on tiny synthetic data, for tests and smoke runs.

    python main.py --config=configs/test.py --workdir=/tmp/ae_test

Its numbers mean nothing; it trains and evaluates in about a minute on a CPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'synthetic'
  config.data.synthetic_train = 256
  config.data.synthetic_test = 64
  config.model.encoder_features = (8, 16, 16)
  config.model.decoder_features = (32, 64, 128)
  config.train.batch_size = 32
  config.train.num_epochs = 2
  config.train.noise_std = 0.1
  config.train.log_every_steps = 4
  config.train.checkpoint_every_steps = 8
  config.train.eval_batch_size = 32
  config.eval.umap_points = 64
  config.eval.query_chunk = 16
  config.eval.gallery_chunk = 48
  return config
