"""The model's convolution layer in the forms measured fastest: PatchConv, and CpuConv on CPUs.

Both hold nn.Conv's parameters (kernel HWIO, bias, the same initialisers) and give its values up to
float rounding, so that a checkpoint moves freely between them and model.conv_impl='flax'.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ae.cpu.lowerings import conv_forward, max_pool_2x2, patch_conv, xla_conv
from ae.cpu.phase_conv import pooled_phase_conv


class PatchConv(nn.Module):
  """A stride-1 convolution as image patches times one matrix product, then (pool) a 2x2 max pool.

  With pool the output is max_pool_2x2(conv) + bias: max_pool_2x2(conv + bias)'s values (adding a
  per-channel constant commutes with max, rounding included) with the bias added to, and its
  gradient summed over, 4x fewer elements; only the rows and columns the pooling reads are
  computed.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  padding: str = 'VALID'
  pool: bool = False
  pool_follows: bool = False  # a 2x2 max pool comes after other layers (a norm)

  def lowering(self, train):
    """How the convolution is computed (ae/cpu/lowerings.py): as patches, training or not."""
    del train
    return 'patches'

  @nn.compact
  def __call__(self, x_NHWC, train=False):
    kh, kw = self.kernel_size
    c = x_NHWC.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (kh, kw, c, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    if self.padding == 'SAME':
      x_NHWC = jnp.pad(x_NHWC, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    h, w = x_NHWC.shape[1] - kh + 1, x_NHWC.shape[2] - kw + 1
    if self.pool:  # an odd last row or column would be dropped by the pooling
      h, w = h // 2 * 2, w // 2 * 2
    lowering = self.lowering(train)
    if lowering == 'patches':
      y = patch_conv(x_NHWC, kernel, h, w)
    else:
      x_NHWC = x_NHWC[:, :h + kh - 1, :w + kw - 1]  # the input they read
      if lowering == 'xla' and self.pool and (kh, kw) == (3, 3) and c < 8:
        return pooled_phase_conv(x_NHWC, kernel) + bias
      y = {'xla_forward': conv_forward, 'xla': xla_conv}[lowering](x_NHWC, kernel)
    return (max_pool_2x2(y) if self.pool else y) + bias


class CpuConv(PatchConv):
  """PatchConv computed as measured fastest on CPU devices.

  Outside training, XLA's convolution forward with the patches' gradient (the refinement of codes
  differentiates through the decoder). In training, a pooled convolution (pool or pool_follows) as
  XLA's convolution with both gradients written out as convolutions (pooling itself with fewer
  than 8 input channels, the images' 3: by pooling phases); an unpooled one as patches.
  """

  def lowering(self, train):
    if not train:
      return 'xla_forward'
    return 'xla' if self.pool or self.pool_follows else 'patches'
