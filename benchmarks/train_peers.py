"""The default model's train step in Keras 3 on TensorFlow and in PyTorch: the peers of
benchmarks.train_speed --peers.

    python -m benchmarks.train_peers keras|torch [--batch_size=128] [--num_images=10000]
        [--noise_std=0.1] [--steps=10]

train_speed starts one such process per peer (peer_process.PeerProcess). Each builds the seed's
architecture (9,038,410 parameters) with the same loss, optimizer, noise and batch as ours, warms it
up with one window, then times one window of --steps train steps per request; it says which
framework versions and which device it runs on. Needs the packages in benchmarks/requirements.txt;
imports no JAX.
"""

import argparse

import numpy as np

from benchmarks.peer_process import serve_windows


def keras_peer(batch_size, num_images, noise_std, steps):
  """(window, about) of the Keras 3 / TensorFlow step."""
  import keras
  import tensorflow as tf
  from keras import layers
  inp = keras.Input((32, 32, 3))
  x = layers.GaussianNoise(noise_std)(inp)
  x = layers.Lambda(lambda t: keras.ops.clip(t, 0.0, 1.0))(x)
  x = layers.Conv2D(32, 3, activation='relu')(x)
  x = layers.MaxPooling2D(2)(x)
  x = layers.Conv2D(64, 3, activation='relu')(x)
  x = layers.MaxPooling2D(2)(x)
  x = layers.Conv2D(128, 3, activation='relu')(x)
  x = layers.Dense(10)(layers.Flatten()(x))
  for f in (512, 1024, 2048):
    x = layers.Dense(f, activation='relu')(x)
  out = layers.Reshape((32, 32, 3))(layers.Dense(3072, activation='sigmoid')(x))
  model = keras.Model(inp, out)
  assert model.count_params() == 9_038_410
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss='mse')
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
  batches = [(images[rng.integers(0, num_images, batch_size)] / 255.0).astype(np.float32)
             for _ in range(4)]

  def window():
    for i in range(steps):
      loss = model.train_on_batch(batches[i % 4], batches[i % 4])
    float(loss)

  window()
  return window, {'framework': f'keras {keras.__version__} ({keras.backend.backend()} backend), '
                               f'tensorflow {tf.__version__}',
                  'backend': 'gpu' if tf.config.list_logical_devices('GPU') else 'cpu'}


def torch_peer(batch_size, num_images, noise_std, steps):
  """(window, about) of the PyTorch step (on the CPU: its tensors are made there)."""
  import torch
  from torch import nn
  model = nn.Sequential(
      nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
      nn.MaxPool2d(2), nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10),
      nn.Linear(10, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 2048),
      nn.ReLU(), nn.Linear(2048, 3072), nn.Sigmoid())
  assert sum(p.numel() for p in model.parameters()) == 9_038_410
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  gen = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (num_images, 3, 32, 32), dtype=torch.uint8, generator=gen)

  def step():
    idx = torch.randint(0, num_images, (batch_size,), generator=gen)
    clean = images[idx].float() / 255.0
    noisy = (clean + noise_std * torch.randn_like(clean)).clamp(0.0, 1.0)
    loss = torch.mean((model(noisy).reshape(-1, 3, 32, 32) - clean) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def window():
    for _ in range(steps):
      loss = step()
    float(loss.detach())

  window()
  return window, {'framework': f'torch {torch.__version__}', 'backend': 'cpu',
                  'threads': torch.get_num_threads()}


PEERS = {'keras': keras_peer, 'torch': torch_peer}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('peer', choices=sorted(PEERS))
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--num_images', type=int, default=10000)
  parser.add_argument('--noise_std', type=float, default=0.1)
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  serve_windows(*PEERS[args.peer](args.batch_size, args.num_images, args.noise_std, args.steps))


if __name__ == '__main__':
  main()
