"""A stride-1 VALID convolution computed three ways, with the same values up to float rounding.

- patch_conv: the patch matrix times the kernel matrix; JAX's gradient of it is slices and
  products, which XLA:CPU runs on its fast matrix-product path.
- conv_forward: XLA's convolution forward, patch_conv's gradient. XLA's own gradient of a
  convolution is slow inside a loop body such as the train step's lax.scan (left in a layout
  XLA:CPU's fast convolution does not take).
- xla_conv: XLA's convolution, and both gradients written as XLA convolutions in the NHWC / HWIO
  form XLA:CPU runs fast; its input is written out once for the kernel gradient (written_out).

Also the 2x2 max pooling as the maximum of four strided views, whose gradient is elementwise
selects instead of a mask, a count and a division per element.
"""

import jax
import jax.numpy as jnp


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


def conv(x_NHWC, kernel_HWIO):
  """XLA's VALID stride-1 convolution in the NHWC / HWIO form."""
  return jax.lax.conv_general_dilated(x_NHWC, kernel_HWIO, (1, 1), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.custom_vjp
def conv_forward(x_NHWC, kernel_HWIO):
  """patch_conv's values from XLA's convolution; its gradient is patch_conv's."""
  return conv(x_NHWC, kernel_HWIO)


def _conv_forward_fwd(x_NHWC, kernel_HWIO):
  return conv_forward(x_NHWC, kernel_HWIO), (x_NHWC, kernel_HWIO)


def _conv_forward_bwd(inputs, dy):
  return jax.vjp(patch_conv, *inputs)[1](dy)


conv_forward.defvjp(_conv_forward_fwd, _conv_forward_bwd)


def written_out(x):
  """x itself, as its product with the identity matrix.

  XLA fuses elementwise producers into each of their consumers, recomputing them there; a product
  it computes once into a buffer that its consumers read. Each value times 1 plus zeros: exact for
  finite values (subnormals become 0, as in every XLA:CPU op, which flushes them).
  """
  c = x.shape[-1]
  return (x.reshape(-1, c) @ jnp.eye(c, dtype=x.dtype)).reshape(x.shape)


@jax.custom_vjp
def xla_conv(x_NHWC, kernel_HWIO):
  """patch_conv's values from XLA's convolution, and its gradients as XLA convolutions written in
  the same NHWC / HWIO form (as JAX differentiates a convolution, XLA:CPU runs the gradients in
  its slow convolution inside a loop)."""
  return conv(x_NHWC, kernel_HWIO)


def conv_residuals(x, kernel):
  """What xla_conv's and pooled_phase_conv's gradients keep of their (symbolic-zeros) arguments.

  x written out once, read by the convolution and, transposed, by the kernel's gradient: left to
  itself XLA:CPU recomputes x's producers (the noise draw, the previous layer's pooling) inside
  that transpose, in its batch-innermost order. 'dx' marks an input that depends on what is
  differentiated (not the first convolution's: the images): only then is its gradient computed,
  so that no program holds a dead convolution.
  """
  res = {'x': written_out(x.value), 'kernel': kernel.value}
  if x.perturbed:
    res['dx'] = ()
  return res


def _xla_conv_fwd(x, kernel):
  res = conv_residuals(x, kernel)
  return conv(res['x'], res['kernel']), res


def _xla_conv_bwd(res, dy):
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    return None, None
  dx = conv_input_grad(dy, res['kernel']) if 'dx' in res else None
  return dx, conv_kernel_grad(res['x'], dy.transpose(1, 2, 0, 3))


xla_conv.defvjp(_xla_conv_fwd, _xla_conv_bwd, symbolic_zeros=True)


def conv_input_grad(dy_NHWF, kernel_HWIO):
  """d/dx of conv: the full convolution of dy with the flipped kernel, channels swapped."""
  kh, kw = kernel_HWIO.shape[:2]
  dy_full = jnp.pad(dy_NHWF, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  return conv(dy_full, jnp.flip(kernel_HWIO, (0, 1)).transpose(0, 1, 3, 2))


def conv_kernel_grad(x_NHWC, dy_HWNF):
  """d/dkernel of conv, from dy as [h, w, N, F]: the input with channels as the batch and images
  as the features [C, H, W, N], convolved with dy as an [h, w, N, F] kernel: [C, kh, kw, F]."""
  return conv(x_NHWC.transpose(3, 1, 2, 0), dy_HWNF).transpose(1, 2, 0, 3)


def max_pool_2x2(x_NHWC):
  """2x2 max pooling, stride 2, VALID (odd edges dropped), as the maximum of four strided views.

  nn.max_pool's values; its gradient is elementwise selects that fuse with their neighbours.
  Only at exact ties within a window does the gradient split differently (halves, not thirds).
  """
  _, h, w, _ = x_NHWC.shape
  h, w = h // 2 * 2, w // 2 * 2
  view = lambda i, j: x_NHWC[:, i:h:2, j:w:2]
  return max_of_four(view(0, 0), view(0, 1), view(1, 0), view(1, 1))


def max_of_four(top_left, top_right, bottom_left, bottom_right):
  """The 2x2 pooling's maximum in one order for both of its forms (max_pool_2x2, and the phases of
  pooled_phase_conv, whose gradient reproduces jnp.maximum's for exactly this nesting)."""
  return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))
