"""The autoencoder: a convolutional encoder, a linear bottleneck, a dense or convolutional decoder.

The convolution layer is injected (as in flax's examples/imagenet): nn.Conv and nn.max_pool, or the
forms measured fastest on the mesh's platform (ae/cpu/conv.py), all with the same parameters.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn

from ae.cpu.conv import CpuConv, PatchConv
from ae.cpu.lowerings import max_pool_2x2

IMAGE_SHAPE = (32, 32, 3)
ModuleDef = Any


def max_pool(x_NHWC):
  """2x2 max pooling, stride 2, VALID (an odd last row or column is dropped)."""
  return nn.max_pool(x_NHWC, (2, 2), strides=(2, 2))


class Conv(nn.Conv):
  """nn.Conv, then (pool) a 2x2 max pool: the convolution layer's interface in plain flax.
  pool_follows: a 2x2 max pool comes after other layers (the CPU form's lowering depends on it)."""
  pool: bool = False
  pool_follows: bool = False

  def __call__(self, x_NHWC, train=False):
    del train  # the same in training and evaluation
    y = super().__call__(x_NHWC)
    return max_pool(y) if self.pool else y


class Encoder(nn.Module):
  """Per width a 3x3 convolution and a relu, a 2x2 max pool between consecutive ones (the
  original report's), optional relu dense layers, then the linear bottleneck."""
  features: Sequence[int]
  latent_dim: int
  conv: ModuleDef = Conv
  pool: Callable = max_pool
  padding: str = 'VALID'
  norm: str = 'none'  # 'group': a GroupNorm after each convolution
  dense: Sequence[int] = ()
  dropout: float = 0.0  # on the inputs of the dense layers and the bottleneck, in training

  @nn.compact
  def __call__(self, x, train=False):
    for i, f in enumerate(self.features):
      pool, norm = i + 1 < len(self.features), self.norm == 'group'
      x = self.conv(f, (3, 3), padding=self.padding, pool=pool and not norm,
                    pool_follows=pool and norm, name=f'Conv_{i}')(x, train)
      if norm:  # between the convolution and its pool
        x = nn.GroupNorm(num_groups=min(8, f))(x)
        x = self.pool(x) if pool else x
      x = nn.relu(x)  # after the pool: the report's values (conv, relu, pool), 4x fewer of them
    h = x.reshape(x.shape[0], -1)
    for i, f in enumerate(self.dense):
      h = nn.relu(nn.Dense(f, name=f'hidden_{i}')(self._drop(h, train, i)))
    return nn.Dense(self.latent_dim, name='bottleneck')(self._drop(h, train, len(self.dense)))

  def _drop(self, h, train, i):
    """Inverted dropout in training (rng stream 'dropout'); the identity at evaluation."""
    if not self.dropout:
      return h
    return nn.Dropout(self.dropout, deterministic=not train, name=f'dropout_{i}')(h)


class DenseDecoder(nn.Module):
  """The original report's decoder: relu dense layers, then a sigmoid dense layer to 3072 pixels."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, z, train=False):  # pylint: disable=unused-argument (ConvDecoder's signature)
    h = z
    for f in self.features:
      h = nn.relu(nn.Dense(f)(h))
    out = nn.sigmoid(nn.Dense(IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2])(h))
    return out.reshape(z.shape[0], *IMAGE_SHAPE)


def depth_to_space_2x(x_NHWC):
  """[N, H, W, 4C] -> [N, 2H, 2W, C]: channel (a, b, c) goes to pixel (2y + a, 2x + b), channel c."""
  n, h, w, c4 = x_NHWC.shape
  x = x_NHWC.reshape(n, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c4 // 4)


class ConvDecoder(nn.Module):
  """A dense layer to a small map, then per width a 3x3 conv to 4x the channels and a 2x sub-pixel
  upsampling (checkerboard-free, unlike a stride-2 transposed conv), up to 32x32."""
  features: Sequence[int]
  conv: ModuleDef = Conv

  @nn.compact
  def __call__(self, z, train=False):
    start = IMAGE_SHAPE[0] // 2 ** len(self.features)
    h = nn.relu(nn.Dense(start * start * self.features[0])(z))
    h = h.reshape(z.shape[0], start, start, self.features[0])
    # Named as the checkpoints of this decoder have always named them.
    conv = lambda f, i: self.conv(f, (3, 3), padding='SAME', name=f'PatchConv_{i}')
    for i, f in enumerate(self.features):
      h = nn.relu(depth_to_space_2x(conv(4 * f, i)(h, train)))
    return nn.sigmoid(conv(IMAGE_SHAPE[2], len(self.features))(h, train))


class AutoEncoder(nn.Module):
  """encode: images [N, 32, 32, 3] in [0, 1] -> codes [N, latent_dim]; decode: back."""
  encoder_features: Sequence[int] = (32, 64, 128)
  decoder_features: Sequence[int] = (512, 1024, 2048)
  latent_dim: int = 10
  decoder: str = 'dense'  # or 'conv'
  encoder_padding: str = 'VALID'
  norm: str = 'none'
  encoder_dense: Sequence[int] = ()
  encoder_dropout: float = 0.0
  conv: ModuleDef = Conv
  pool: Callable = max_pool

  def setup(self):
    self.encoder = Encoder(self.encoder_features, self.latent_dim, self.conv, self.pool,
                           self.encoder_padding, self.norm, self.encoder_dense,
                           self.encoder_dropout)
    if self.decoder not in ('dense', 'conv'):
      raise ValueError(f"model.decoder must be 'dense' or 'conv', got {self.decoder!r}")
    self.decoder_net = (ConvDecoder(self.decoder_features, self.conv) if self.decoder == 'conv'
                        else DenseDecoder(self.decoder_features))

  def encode(self, x, train=False):
    return self.encoder(x, train)

  def decode(self, z, train=False):
    return self.decoder_net(z, train)

  def __call__(self, x, train=False):
    """train=True turns on the encoder's dropout (rngs={'dropout': key} when it is > 0) and
    picks the training form of the CPU convolutions (the same values up to rounding)."""
    return self.decode(self.encode(x, train), train)


def create_model(model_config, platform) -> AutoEncoder:
  """The configured model; its convolution form from model.conv_impl and the devices' platform
  (parallel.platform(mesh); the parameters' shapes are the same on every platform)."""
  m = model_config
  if m.conv_impl == 'flax':
    conv, pool = Conv, max_pool
  else:
    conv, pool = (CpuConv if platform == 'cpu' else PatchConv), max_pool_2x2
  return AutoEncoder(tuple(m.encoder_features), tuple(m.decoder_features), m.latent_dim,
                     m.decoder, m.encoder_padding, m.norm, tuple(m.encoder_dense),
                     m.encoder_dropout, conv, pool)
