"""Traversals, interpolations and samples of the code, against NumPy and the decoder itself."""

import types

import jax
import numpy as np

from ae.model import create_model
from conftest import tiny_config
from eval import latent_views


def test_each_traversal_row_sweeps_one_unit_between_its_percentiles_from_the_mean():
  z = np.random.default_rng(0).normal(size=(500, 4)) * [1, 2, 3, 4] + [0, 1, 2, 3]
  codes = latent_views.traversal_codes(z, steps=5)
  assert codes.shape == (4, 5, 4)
  for d in range(4):
    others = [j for j in range(4) if j != d]
    np.testing.assert_allclose(codes[d][:, others], np.broadcast_to(z.mean(0)[others], (5, 3)),
                               rtol=1e-6)
    np.testing.assert_allclose(codes[d, :, d], np.linspace(*np.percentile(z[:, d], [2, 98]), 5),
                               rtol=1e-6)


def test_interpolations_run_from_one_code_or_image_to_the_other():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(3, 10)), rng.normal(size=(3, 10))
  line = latent_views.interpolation_codes(a, b, steps=5)
  np.testing.assert_allclose(line[:, 0], a, rtol=1e-6)
  np.testing.assert_allclose(line[:, -1], b, rtol=1e-6)
  np.testing.assert_allclose(line[:, 2], (a + b) / 2, rtol=1e-6)
  x, y = rng.random((3, 4, 4, 3)), rng.random((3, 4, 4, 3))
  fade = latent_views.crossfade(x, y, steps=5)
  np.testing.assert_allclose(fade[:, 0], x, rtol=1e-6)
  np.testing.assert_allclose(fade[:, 1], 0.75 * x + 0.25 * y, rtol=1e-6)


def test_samples_follow_the_fitted_gaussian_and_the_seed():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(2000, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]]) + 5
  draws = latent_views.gaussian_samples(z, 20000, seed=0)
  np.testing.assert_allclose(draws.mean(0), z.mean(0), atol=0.05)
  np.testing.assert_allclose(np.cov(draws, rowvar=False), np.cov(z, rowvar=False), atol=0.08)
  np.testing.assert_array_equal(draws[:5], latent_views.gaussian_samples(z, 5, seed=0))
  assert not np.array_equal(draws[:5], latent_views.gaussian_samples(z, 5, seed=1))


def test_the_evaluator_decodes_each_view_with_the_models_decoder():
  config = tiny_config()
  model = create_model(config.model, 'cpu')
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  params = jax.jit(model.init)(jax.random.key(0), images[:1].astype(np.float32))
  encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))
  decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
  z = np.asarray(encode(params, images.astype(np.float32) / 255))
  inputs = types.SimpleNamespace(config=config, model=model, params=params, train_z=z,
                                 test={'z': z}, ds=types.SimpleNamespace(test_images=images))
  numbers, arrays = latent_views.evaluate(inputs)
  assert numbers == {}
  travel, stds = arrays['traversals']
  assert travel.shape == (10, latent_views.TRAVERSAL_STEPS, 32, 32, 3)
  np.testing.assert_allclose(stds, z.std(0), rtol=1e-6)
  np.testing.assert_allclose(travel[3], decode(params, latent_views.traversal_codes(z)[3]),
                             rtol=1e-5, atol=1e-6)
  decoded, faded = arrays['interpolations']
  assert decoded.shape == faded.shape == (latent_views.PAIRS, latent_views.INTERPOLATION_STEPS,
                                          32, 32, 3)
  np.testing.assert_allclose(decoded[1, -1], decode(params, z[3:4])[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(faded[1, 0], images[2] / 255, rtol=1e-6)
  assert arrays['samples'].shape == (latent_views.SAMPLES, 32, 32, 3)
