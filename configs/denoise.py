"""The original report's denoising run: the default model on noisy inputs (Gaussian, std 0.1).

    python main.py --config=configs/denoise.py

To continue a clean run on noisy data instead (the original report's section 4.2):

    python main.py --config=configs/denoise.py --workdir=runs/retrain \
        --config.train.init_from=runs/default --config.train.num_epochs=5

Test MSE about 0.0230, P@10 about 0.285 / 0.279 / 0.283; about 20 minutes on a 2-core CPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.train.noise_std = 0.1
  return config
