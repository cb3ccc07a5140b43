"""A pooled 3x3 convolution of few input channels as one 2x2 convolution to its four pooling phases.

For the images' 3 channels the 3x3 convolution's product is only 27 deep; XLA:CPU's convolution
runs the space-to-depth form (4 x 3 channels, 2x2 taps, 7 of each 16 taps zeros) faster, although
it multiplies more.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ae.cpu.lowerings import (conv, conv_input_grad, conv_kernel_grad, conv_residuals,
                              max_of_four)

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
  y = conv(cells.reshape(n, hx // 2, wx // 2, 4 * c), phase_kernel(kernel_HWIO))
  return y.reshape(*y.shape[:3], 2, 2, kernel_HWIO.shape[-1])


def _phases(y):
  """The four pooling phases of [N, h/2, w/2, 2, 2, F]: top left, top right, bottom left,
  bottom right."""
  return y[..., 0, 0, :], y[..., 0, 1, :], y[..., 1, 0, :], y[..., 1, 1, :]


def _pool_phases(y):
  """max_pool_2x2 of the outputs, in its order (max_of_four)."""
  return max_of_four(*_phases(y))


def _max_share(a, b, m):
  """The share of m = jnp.maximum(a, b)'s gradient that goes to a, as JAX's: 1, 1/2 at a tie, 0."""
  one = jnp.ones_like(m)
  return jnp.where(a == m, one, 0) / jnp.where(b == m, 2 * one, one)


@jax.custom_vjp
def pooled_phase_conv(x_NHWC, kernel_HWIO):
  """max_pool_2x2(conv(x, kernel)) for a 3x3 kernel and even output sizes (x: [N, h+2, w+2, C]).

  Computed as one 2x2 convolution of x's space-to-depth form to the four pooling phases' outputs
  (phase_kernel), pooled as the maximum over phases. The values are the same up to float
  rounding, the gradient jnp.maximum's (max_pool_2x2's) to the bit: each phase's share of the
  pooled gradient, interleaved to the full grid in the [h, w, N, F] form that the kernel gradient
  takes (xla_conv's, as is the input's where the input is differentiated).
  """
  return _pool_phases(_phase_outputs(x_NHWC, kernel_HWIO))


def _pooled_phase_conv_fwd(x, kernel):
  res = conv_residuals(x, kernel)
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
  dk = conv_kernel_grad(res['x'], dy.transpose(1, 3, 2, 4, 0, 5).reshape(2 * h2, 2 * w2, n, f))
  dx = None
  if 'dx' in res:
    dx = conv_input_grad(dy.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h2, 2 * w2, f),
                         res['kernel'])
  return dx, dk


pooled_phase_conv.defvjp(_pooled_phase_conv_fwd, _pooled_phase_conv_bwd, symbolic_zeros=True)
