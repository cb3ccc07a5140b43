"""configs/head_same.py with more regularisation: weight decay 0.2 instead of 0.05 and random
translations of up to 1 pixel (reflected border) on top of the flips. The best 10-unit model by
test MSE measured (README, Results: head_same_wd02_shift1, test MSE 0.01903).

    python main.py --config=configs/head_same_reg.py --workdir=runs/head_same_reg

About 80 minutes for the 25 epochs on 2 CPU cores.
"""

from configs import head_same


def get_config():
  config = head_same.get_config()
  config.train.weight_decay = 0.2
  config.train.random_shift = 1
  return config
