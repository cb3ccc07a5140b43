"""Refined codes: each image's own descent through the fixed decoder, never worse than the
encoder's code."""

import jax
import jax.numpy as jnp
import numpy as np

from ae.model import create_model
from conftest import tiny_config
from eval.refine import refine_codes


def _model_and_images():
  model = create_model(tiny_config().model, 'cpu')
  x = jnp.asarray(np.random.default_rng(0).random((6, 32, 32, 3), np.float32))
  params = jax.jit(model.init)(jax.random.key(0), x[:1])
  return model, params, x


def test_refined_codes_lower_each_images_error_and_report_it_exactly():
  model, params, x = _model_and_images()
  refine = jax.jit(lambda p, x: refine_codes(model, p, x, steps=20, lr=0.05))
  z, sse, sse0 = refine(params, x)
  z0 = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))(params, x)
  decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
  recon = lambda z: np.asarray(decode(params, z), np.float64)
  x64 = np.asarray(x, np.float64)
  np.testing.assert_allclose(sse0, ((recon(z0) - x64) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(sse, ((recon(z) - x64) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)
  assert np.all(np.asarray(sse) <= np.asarray(sse0))
  assert float(jnp.sum(sse)) < 0.99 * float(jnp.sum(sse0))  # it moved the codes for the better
  assert z.shape == z0.shape == (6, 10)


def test_refinement_of_an_image_does_not_depend_on_its_batch():
  model, params, x = _model_and_images()
  refine = jax.jit(lambda p, x: refine_codes(model, p, x, steps=10, lr=0.05)[0])
  together = refine(params, x)
  alone = np.concatenate([refine(params, x[i:i + 1]) for i in range(len(x))])
  np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_zero_steps_keep_the_encoders_codes():
  model, params, x = _model_and_images()
  z, sse, sse0 = refine_codes(model, params, x, steps=0, lr=0.05)
  np.testing.assert_array_equal(z, model.apply(params, x, method=model.encode))
  np.testing.assert_array_equal(sse, sse0)
