"""configs/improved.py on noisy inputs, each image's noise std drawn from U(0, 0.1): one model that
reconstructs clean and noisy (std 0.1) inputs alike.

    python main.py --config=configs/improved_denoise.py

Test MSE about 0.0189 on clean and noisy inputs alike, P@10 about 0.316 / 0.307 / 0.316 (noisy
queries 0.313 / 0.307 / 0.315); 45-95 minutes on a 2-core CPU.
"""

from configs import improved


def get_config():
  config = improved.get_config()
  config.train.noise_std = 0.1
  config.train.random_noise_std = True
  return config
