"""The best 10-unit model measured: the original report's convolutions with SAME padding, two
relu dense layers of 1,024 units before the bottleneck, AdamW (weight decay 0.1) with warm-up and
cosine decay, random flips and 1-pixel shifts, batches of 64.

    python main.py --config=configs/improved.py

Test MSE about 0.0189, P@10 about 0.313 / 0.306 / 0.314; 45-95 minutes on a 2-core CPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.encoder_padding = 'SAME'
  config.model.encoder_dense = (1024, 1024)
  config.train.batch_size = 64
  config.train.optimizer = 'adamw'
  config.train.weight_decay = 0.1
  config.train.schedule = 'cosine'
  config.train.warmup_steps = 500
  config.train.random_flip = True
  config.train.random_shift = 1
  return config
