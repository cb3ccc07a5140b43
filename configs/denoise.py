"""The seed's denoising run: the default model trained on noisy inputs (std 0.1).

    python main.py --config=configs/denoise.py --workdir=runs/denoise

To continue a clean run on noisy data (the seed's section 4.2):

    python main.py --config=configs/denoise.py --workdir=runs/retrain \
        --config.train.init_from=runs/default
"""

from configs import default


def get_config():
  config = default.get_config()
  config.train.noise_std = 0.1
  return config
