"""The improved model (configs/conv.py) trained on noisy inputs (std 0.1).

    python main.py --config=configs/conv_denoise.py --workdir=runs/conv_denoise
"""

from configs import conv


def get_config():
  config = conv.get_config()
  config.train.noise_std = 0.1
  return config
