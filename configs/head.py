"""The seed's convolutions and dense decoder, two relu dense layers of 1,024 units between the
convolutions and the bottleneck, AdamW (weight decay 0.05) with warm-up and cosine decay, random
left-right flips (README, Results: dense_head1024x2_flip, test MSE 0.0195).
configs/head_same.py and configs/head_same_reg.py build on it.

    python main.py --config=configs/head.py --workdir=runs/head

About 45 minutes for the 25 epochs on 2 CPU cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.encoder_dense = (1024, 1024)
  config.train.optimizer = 'adamw'
  config.train.weight_decay = 0.05
  config.train.schedule = 'cosine'
  config.train.warmup_steps = 500
  config.train.random_flip = True
  return config
