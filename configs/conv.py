"""A convolutional decoder and a wider, group-normed SAME-padded encoder; AdamW with warm-up and
cosine decay; the same 10-unit bottleneck.

    python main.py --config=configs/conv.py

About 4 times the default model's convolution work per image: a GPU config (on a 2-core CPU the
25 epochs take hours). Not yet measured at this size.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.encoder_features = (64, 128, 256)
  config.model.encoder_padding = 'SAME'
  config.model.norm = 'group'
  config.model.decoder = 'conv'
  config.model.decoder_features = (128, 64, 32)
  config.train.optimizer = 'adamw'
  config.train.weight_decay = 1e-4
  config.train.schedule = 'cosine'
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 500
  return config
