"""configs/head.py trained on noisy inputs, each image's noise std drawn from U(0, 0.1): it
reconstructs clean and noisy (std 0.1) inputs alike (README, Results: dense_head1024x2_flip_noise).

    python main.py --config=configs/head_denoise.py --workdir=runs/head_denoise
"""

from configs import head


def get_config():
  config = head.get_config()
  config.train.noise_std = 0.1
  config.train.random_noise_std = True
  return config
