"""The autoencoder: a conv encoder, a linear bottleneck and a dense or conv decoder."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SHAPE = (32, 32, 3)


class PatchConv(nn.Module):
  """A stride-1 convolution computed as image patches times one matmul, or as XLA's convolution.

  Same parameters (kernel HWIO, bias) and initialisers as nn.Conv, same values. As patches the
  backward pass becomes slices and matmuls, which XLA:CPU runs on its fast GEMM path: measured on
  2 cores, the gradients of the seed's first and last convolutions were 1.6-1.7x faster than
  XLA's convolution as JAX differentiates it, the middle one's as fast (xla_conv's gradients,
  written out, are faster for the pooled two).

  lowering (conv_lowering chooses it per layer) says how it is computed, always with the same
  values up to float rounding:
  - 'patches': patch matrix times the kernel matrix, and so the gradient.
  - 'xla_forward': XLA's convolution forward, the patches' gradient (conv_forward). The encoder
    and the conv decoder outside training on CPU devices: forward-only (compiled with
    parallel.CPU_INFERENCE_COMPILER_OPTIONS) the seed's encoder is then 2x as fast and
    configs/conv.py's whole model 1.5x.
  - 'xla': XLA's convolution, and both gradients as XLA convolutions too (xla_conv). The
    encoder's pooled convolutions in training on CPU devices (compiled with
    parallel.CPU_STEP_COMPILER_OPTIONS, which leave convolutions to XLA's own, Eigen): the seed's
    train step 1.02-1.07x as fast by the medians of 25 alternating windows in four runs on 2
    AVX-512 cores (benchmarks/RESULTS.md); the unpooled third convolution and the conv decoder's
    stay on the patches (0.99x and slower). A pooled 3x3 convolution of fewer than 8 input
    channels (the images' 3) goes through pooled_phase_conv: the step 1.04-1.09x as fast again.
  On a GPU every layer keeps the patches (not measured otherwise).

  With pool=True the output is max_pool_2x2(conv + bias), computed as max_pool_2x2(conv) + bias:
  the same values (adding a per-channel constant commutes with max, rounding included), with
  the bias added to, and its gradient summed over, 4x fewer elements. Only the rows and columns
  that the pooling reads are computed: of the seed's 13x13 second convolution, 12x12 (15% less).
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  padding: str = 'VALID'
  pool: bool = False

  @nn.compact
  def __call__(self, x_NHWC, lowering='patches'):
    kh, kw = self.kernel_size
    c = x_NHWC.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (kh, kw, c, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    if self.padding == 'SAME':
      x_NHWC = jnp.pad(x_NHWC, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    h, w = x_NHWC.shape[1] - kh + 1, x_NHWC.shape[2] - kw + 1
    if self.pool:  # an odd last row or column would be dropped by the pooling
      h, w = h // 2 * 2, w // 2 * 2
    if lowering == 'patches':
      y = patch_conv(x_NHWC, kernel, h, w)
    else:
      x_NHWC = x_NHWC[:, :h + kh - 1, :w + kw - 1]  # the input they read
      if lowering == 'xla' and self.pool and (kh, kw) == (3, 3) and c < 8:
        return pooled_phase_conv(x_NHWC, kernel) + bias
      y = {'xla_forward': conv_forward, 'xla': xla_conv}[lowering](x_NHWC, kernel)
    return (max_pool_2x2(y) if self.pool else y) + bias


def patch_conv(x_NHWC, kernel_HWIO, h=None, w=None):
  """The first h x w outputs (default: all) of the VALID stride-1 convolution, as the patch
  matrix times the kernel matrix."""
  kh, kw, c, f = kernel_HWIO.shape
  n = x_NHWC.shape[0]
  h = x_NHWC.shape[1] - kh + 1 if h is None else h
  w = x_NHWC.shape[2] - kw + 1 if w is None else w
  patches = jnp.concatenate(
      [x_NHWC[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
  y = patches.reshape(-1, kh * kw * c) @ kernel_HWIO.reshape(kh * kw * c, f)
  return y.reshape(n, h, w, f)


def _conv(x_NHWC, kernel_HWIO):
  return jax.lax.conv_general_dilated(x_NHWC, kernel_HWIO, (1, 1), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.custom_vjp
def conv_forward(x_NHWC, kernel_HWIO):
  """patch_conv's values from XLA's convolution; its gradient is patch_conv's (XLA's own gradient
  of a convolution, see xla_conv, would be slow inside a loop)."""
  return _conv(x_NHWC, kernel_HWIO)


def _conv_forward_fwd(x_NHWC, kernel_HWIO):
  return conv_forward(x_NHWC, kernel_HWIO), (x_NHWC, kernel_HWIO)


def _conv_forward_bwd(inputs, dy):
  return jax.vjp(patch_conv, *inputs)[1](dy)


conv_forward.defvjp(_conv_forward_fwd, _conv_forward_bwd)


def written_out(x):
  """x itself, as its product with the identity matrix: XLA fuses elementwise producers into each
  of their consumers, recomputing them there; a product it computes once into a buffer that its
  consumers read. Each value times 1 plus zeros: exact for finite values (subnormals become 0, as
  in every XLA:CPU op, which flushes them)."""
  c = x.shape[-1]
  return (x.reshape(-1, c) @ jnp.eye(c, dtype=x.dtype)).reshape(x.shape)


@jax.custom_vjp
def xla_conv(x_NHWC, kernel_HWIO):
  """patch_conv's values from XLA's convolution, and its gradients as XLA convolutions written in
  the same NHWC / HWIO form. XLA's own gradient convolutions (as JAX differentiates one) are left,
  inside a loop body such as the train step's lax.scan, in a layout XLA:CPU's fast convolution does
  not take, and run 15-20x slower (the train step: 1.6 s instead of 0.09 s)."""
  return _conv(x_NHWC, kernel_HWIO)


def _conv_residuals(x, kernel):
  """What xla_conv's and pooled_phase_conv's gradients keep of their (symbolic-zeros) arguments.

  x written out once, read by the convolution and, transposed, by the kernel's gradient: left to
  itself XLA:CPU recomputes x's producers (the noise draw, the previous layer's pooling) inside
  that transpose, in its batch-innermost order (7 ms for the second convolution's input). 'dx'
  marks an input that depends on what is differentiated (not the first convolution's: the
  images): only then is its gradient computed, so that no program holds a dead convolution."""
  res = {'x': written_out(x.value), 'kernel': kernel.value}
  if x.perturbed:
    res['dx'] = ()
  return res


def _xla_conv_fwd(x, kernel):
  res = _conv_residuals(x, kernel)
  return _conv(res['x'], res['kernel']), res


def _xla_conv_bwd(res, dy):
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    return None, None
  dx = _conv_input_grad(dy, res['kernel']) if 'dx' in res else None
  return dx, _conv_kernel_grad(res['x'], dy.transpose(1, 2, 0, 3))


xla_conv.defvjp(_xla_conv_fwd, _xla_conv_bwd, symbolic_zeros=True)


def _conv_input_grad(dy_NHWF, kernel_HWIO):
  """d/dx of _conv: the full convolution of dy with the flipped kernel, channels swapped."""
  kh, kw = kernel_HWIO.shape[:2]
  dy_full = jnp.pad(dy_NHWF, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  return _conv(dy_full, jnp.flip(kernel_HWIO, (0, 1)).transpose(0, 1, 3, 2))


def _conv_kernel_grad(x_NHWC, dy_HWNF):
  """d/dkernel of _conv, from dy as [h, w, N, F]: the input with channels as the batch and images
  as the features [C, H, W, N], convolved with dy as an [h, w, N, F] kernel: [C, kh, kw, F]."""
  return _conv(x_NHWC.transpose(3, 1, 2, 0), dy_HWNF).transpose(1, 2, 0, 3)


# Output row 2i + a (pooling phase a) reads input row 2(i + u) + r (space-to-depth cell row i + u,
# row r in the cell) through kernel row 2u + r - a: _PHASE_TAP[u, r, a] is that row + 1, an index
# into the kernel padded with a zero row each side (for rows -1 and 3). The same for columns.
_PHASE_TAP = np.array([[[2 * u + r - a + 1 for a in (0, 1)] for r in (0, 1)] for u in (0, 1)])


def phase_kernel(kernel_HWIO):
  """A 3x3 kernel [3, 3, C, F] as the 2x2 kernel [2, 2, 4C, 4F] that maps an input's 2x2
  space-to-depth form (channels: row r, column s, c) to the convolution's outputs at the four
  pooling phases (channels: row a, column b, f); 7 of each 16 taps are zeros."""
  c, f = kernel_HWIO.shape[2:]
  padded = jnp.pad(kernel_HWIO, ((1, 1), (1, 1), (0, 0), (0, 0)))
  rows = _PHASE_TAP[:, None, :, None, :, None]  # [u, v, r, s, a, b]
  cols = _PHASE_TAP[None, :, None, :, None, :]
  taps = padded[rows, cols]  # [u, v, r, s, a, b, C, F]
  return taps.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(2, 2, 4 * c, 4 * f)


def _phase_outputs(x_NHWC, kernel_HWIO):
  """The VALID 3x3 convolution's outputs as [N, h/2, w/2, 2, 2, F] (row and column phase last
  but the features), from one 2x2 convolution of x's space-to-depth form."""
  n, hx, wx, c = x_NHWC.shape
  cells = x_NHWC.reshape(n, hx // 2, 2, wx // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  y = _conv(cells.reshape(n, hx // 2, wx // 2, 4 * c), phase_kernel(kernel_HWIO))
  return y.reshape(*y.shape[:3], 2, 2, kernel_HWIO.shape[-1])


def _phases(y):
  """The four pooling phases of [N, h/2, w/2, 2, 2, F]: top left, top right, bottom left,
  bottom right."""
  return y[..., 0, 0, :], y[..., 0, 1, :], y[..., 1, 0, :], y[..., 1, 1, :]


def _pool_phases(y):
  """max_pool_2x2 of the outputs, in its order (_max_of_four)."""
  return _max_of_four(*_phases(y))


def _max_share(a, b, m):
  """The share of m = jnp.maximum(a, b)'s gradient that goes to a, as JAX's: 1, 1/2 at a tie, 0."""
  one = jnp.ones_like(m)
  return jnp.where(a == m, one, 0) / jnp.where(b == m, 2 * one, one)


@jax.custom_vjp
def pooled_phase_conv(x_NHWC, kernel_HWIO):
  """max_pool_2x2(_conv(x, kernel)) for a 3x3 kernel and even output sizes (x: [N, h+2, w+2, C]),
  computed as one 2x2 convolution of x's space-to-depth form to the four pooling phases' outputs
  (phase_kernel), pooled as the maximum over phases. For the images' 3 channels XLA:CPU's
  convolution runs this product (K = 4C x 4 taps, 1.8x the multiplications) faster than the 3x3
  one (K = 27): forward and pooling 2.8 against 5.4 ms at batch 128 on 2 cores. The values are the
  same up to float rounding, the gradient jnp.maximum's (max_pool_2x2's) to the bit: each phase's
  share of the pooled gradient, interleaved to the full grid in the [h, w, N, F] form that the
  kernel gradient takes (xla_conv's, as is the input's where the input is differentiated)."""
  return _pool_phases(_phase_outputs(x_NHWC, kernel_HWIO))


def _pooled_phase_conv_fwd(x, kernel):
  res = _conv_residuals(x, kernel)
  res['y'] = _phase_outputs(res['x'], res['kernel'])
  return _pool_phases(res['y']), res


def _pooled_phase_conv_bwd(res, dp):
  if isinstance(dp, jax.custom_derivatives.SymbolicZero):
    return None, None
  tl, tr, bl, br = _phases(res['y'])
  top, bottom = jnp.maximum(tl, tr), jnp.maximum(bl, br)
  m = jnp.maximum(top, bottom)
  d_top, d_bottom = dp * _max_share(top, bottom, m), dp * _max_share(bottom, top, m)
  dy = jnp.stack([  # [N, h/2, w/2, a, b, F]
      jnp.stack([d_top * _max_share(tl, tr, top), d_top * _max_share(tr, tl, top)], axis=3),
      jnp.stack([d_bottom * _max_share(bl, br, bottom), d_bottom * _max_share(br, bl, bottom)],
                axis=3)], axis=3)
  n, h2, w2, _, _, f = dy.shape
  dk = _conv_kernel_grad(res['x'], dy.transpose(1, 3, 2, 4, 0, 5).reshape(2 * h2, 2 * w2, n, f))
  dx = None
  if 'dx' in res:
    dx = _conv_input_grad(dy.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h2, 2 * w2, f),
                          res['kernel'])
  return dx, dk


pooled_phase_conv.defvjp(_pooled_phase_conv_fwd, _pooled_phase_conv_bwd, symbolic_zeros=True)


def conv_lowering(train, pooled=False):
  """A PatchConv layer's lowering (see PatchConv): on CPU devices 'xla_forward' outside
  training, 'xla' for a convolution whose output is pooled in training; 'patches' otherwise."""
  if jax.default_backend() != 'cpu':
    return 'patches'
  if not train:
    return 'xla_forward'
  return 'xla' if pooled else 'patches'


def max_pool_2x2(x_NHWC):
  """2x2 max pooling, stride 2, VALID (odd edges dropped), as the maximum of four strided views.

  Same values as a reduce-max; its gradient is elementwise selects that fuse with their
  neighbours instead of a mask, a count and a division per element (3% of the CPU train step).
  Only at exact ties within a window does the gradient split differently (halves, not thirds).
  """
  _, h, w, _ = x_NHWC.shape
  h, w = h // 2 * 2, w // 2 * 2
  view = lambda i, j: x_NHWC[:, i:h:2, j:w:2]
  return _max_of_four(view(0, 0), view(0, 1), view(1, 0), view(1, 1))


def _max_of_four(top_left, top_right, bottom_left, bottom_right):
  """The 2x2 pooling's maximum in one order for both of its forms (max_pool_2x2, and the phases of
  pooled_phase_conv, whose gradient reproduces jnp.maximum's for exactly this nesting)."""
  return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))


class Encoder(nn.Module):
  features: Sequence[int]
  latent_dim: int
  padding: str = 'VALID'
  norm: str = 'none'
  dense: Sequence[int] = ()  # relu dense layers between the convs and the linear bottleneck
  dropout: float = 0.0  # dropout rate on the inputs of those dense layers and the bottleneck

  @nn.compact
  def __call__(self, x_NHWC, train=False):
    # Per width: conv, relu, 2x2 max pool as the seed (no pool after the last conv). Relu after
    # the pool gives the same values on 4x fewer elements; without a norm between them, the
    # conv's bias is added after the pool too (PatchConv(pool=True)).
    for i, f in enumerate(self.features):
      pool = i + 1 < len(self.features)
      fuse_pool = pool and self.norm == 'none'
      conv = PatchConv(f, (3, 3), padding=self.padding, pool=fuse_pool, name=f'Conv_{i}')
      x_NHWC = conv(x_NHWC, conv_lowering(train, pooled=pool))
      if self.norm == 'group':
        x_NHWC = nn.GroupNorm(num_groups=min(8, f))(x_NHWC)
      if pool and not fuse_pool:
        x_NHWC = max_pool_2x2(x_NHWC)
      x_NHWC = nn.relu(x_NHWC)
    h_NF = x_NHWC.reshape(x_NHWC.shape[0], -1)
    for i, f in enumerate(self.dense):
      h_NF = nn.relu(nn.Dense(f, name=f'hidden_{i}')(self._drop(h_NF, train, i)))
    return nn.Dense(self.latent_dim, name='bottleneck')(self._drop(h_NF, train, len(self.dense)))

  def _drop(self, h_NF, train, i):
    """Inverted dropout in training (rng stream 'dropout'); the identity at evaluation."""
    if not self.dropout:
      return h_NF
    return nn.Dropout(self.dropout, deterministic=not train, name=f'dropout_{i}')(h_NF)


class DenseDecoder(nn.Module):
  """The seed's decoder: relu dense layers, then a sigmoid dense layer to 3072 pixels."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, z_ND, train=False):
    del train  # the same in training and evaluation (the conv decoder's signature)
    h = z_ND
    for f in self.features:
      h = nn.relu(nn.Dense(f)(h))
    out = nn.sigmoid(nn.Dense(IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2])(h))
    return out.reshape(z_ND.shape[0], *IMAGE_SHAPE)


def depth_to_space_2x(x_NHWC):
  """[N, H, W, 4C] -> [N, 2H, 2W, C] (sub-pixel upsampling)."""
  n, h, w, c4 = x_NHWC.shape
  c = c4 // 4
  x = x_NHWC.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c)


class ConvDecoder(nn.Module):
  """A dense layer to a small map, then per width a 3x3 conv to 4x channels and a 2x sub-pixel
  upsampling (the checkerboard-free equivalent of a stride-2 transposed conv), up to 32x32."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, z_ND, train=False):
    start = IMAGE_SHAPE[0] // 2 ** len(self.features)
    h = nn.relu(nn.Dense(start * start * self.features[0])(z_ND))
    h = h.reshape(z_ND.shape[0], start, start, self.features[0])
    lowering = conv_lowering(train)
    for f in self.features:
      h = nn.relu(depth_to_space_2x(PatchConv(4 * f, (3, 3), padding='SAME')(h, lowering)))
    return nn.sigmoid(PatchConv(IMAGE_SHAPE[2], (3, 3), padding='SAME')(h, lowering))


class AutoEncoder(nn.Module):
  encoder_features: Sequence[int] = (32, 64, 128)
  decoder_features: Sequence[int] = (512, 1024, 2048)
  latent_dim: int = 10
  decoder: str = 'dense'
  encoder_padding: str = 'VALID'
  norm: str = 'none'
  encoder_dense: Sequence[int] = ()
  encoder_dropout: float = 0.0

  def setup(self):
    self.encoder = Encoder(self.encoder_features, self.latent_dim, self.encoder_padding, self.norm,
                           self.encoder_dense, self.encoder_dropout)
    if self.decoder == 'dense':
      self.decoder_net = DenseDecoder(self.decoder_features)
    elif self.decoder == 'conv':
      self.decoder_net = ConvDecoder(self.decoder_features)
    else:
      raise ValueError(f"model.decoder must be 'dense' or 'conv', got {self.decoder!r}")

  def encode(self, x_NHWC, train=False):
    return self.encoder(x_NHWC, train)

  def decode(self, z_ND, train=False):
    return self.decoder_net(z_ND, train)

  def __call__(self, x_NHWC, train=False):
    """train=True turns on the encoder's dropout (needs rngs={'dropout': key} when it is > 0);
    train also chooses how the convolutions are computed on CPU devices (conv_lowering: the same
    values up to rounding)."""
    return self.decode(self.encode(x_NHWC, train), train)


def create_model(model_config) -> AutoEncoder:
  return AutoEncoder(
      encoder_features=tuple(model_config.encoder_features),
      decoder_features=tuple(model_config.decoder_features),
      latent_dim=model_config.latent_dim,
      decoder=model_config.decoder,
      encoder_padding=model_config.encoder_padding,
      norm=model_config.norm,
      encoder_dense=tuple(model_config.encoder_dense),
      encoder_dropout=model_config.encoder_dropout,
  )


def to_float(images_u8):
  """uint8 pixels to float32 in [0, 1], as the seed's division by 255."""
  return images_u8.astype(jnp.float32) / 255.0
