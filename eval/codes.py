"""What every evaluator reads: the model and data, with the codes and errors computed once."""

import dataclasses

import jax.numpy as jnp
import numpy as np
from absl import logging

from ae import parallel, rng
from ae.augment import noisy_copies
from ae.data import Dataset
from ae.inference import apply_in_batches, make_batched_fn

NUM_SHOWN = 10  # test images in the reconstruction, denoising and query figures


def make_encode_fn(mesh, model):
  """The jitted batch function that gives the latent codes of clean images."""
  return make_batched_fn(mesh, lambda params, x, idx: model.apply(params, x, method=model.encode))


@dataclasses.dataclass
class Inputs:
  """The run's model, parameters and data, with its codes.

  train_z: [N_train, D] codes of the training images. test: per test image, its code 'z', the code
  of its noisy copy 'z_noisy', and the squared errors 'sse_recon' (reconstruction of the clean
  image), 'sse_noisy_input' (noisy copy) and 'sse_recon_noisy' (reconstruction of the noisy copy),
  each against the clean image. shown: for the first NUM_SHOWN test images, 'recon', 'noisy' and
  'recon_noisy' images. test_dev: the test images on the devices.
  """
  config: object
  model: object
  params: object
  mesh: object
  ds: Dataset
  train_z: np.ndarray
  test: dict
  shown: dict
  test_dev: object

  @property
  def nn_kwargs(self):
    """nearest_neighbors' keywords for latent codes: the config's tiles, this run's mesh."""
    e = self.config.eval
    return {'query_chunk': e.query_chunk, 'gallery_chunk': e.gallery_chunk, 'mesh': self.mesh}


def encode(config, model, params, mesh, ds):
  """Inputs with every code and error the evaluators read, computed on the devices."""
  noise_key, noise_std = rng.stream(config.seed, rng.EVAL_NOISE), config.eval.noise_std

  def test_outputs(params, x, idx):
    noisy_x = noisy_copies(x, idx, noise_key, noise_std)
    z, z_noisy = (model.apply(params, v, method=model.encode) for v in (x, noisy_x))
    sse = lambda a, b: jnp.sum(jnp.square(a - b), axis=(1, 2, 3))
    return {'z': z, 'z_noisy': z_noisy,
            'sse_recon': sse(model.apply(params, z, method=model.decode), x),
            'sse_noisy_input': sse(noisy_x, x),
            'sse_recon_noisy': sse(model.apply(params, z_noisy, method=model.decode), x)}

  def shown(params, x, idx):
    noisy_x = noisy_copies(x, idx, noise_key, noise_std)
    return {'recon': model.apply(params, x), 'noisy': noisy_x,
            'recon_noisy': model.apply(params, noisy_x)}

  rep, batch = parallel.replicated(mesh), config.train.eval_batch_size
  train_dev, test_dev = parallel.put(ds.train_images, rep), parallel.put(ds.test_images, rep)
  n_test = len(ds.test_images)
  logging.info('eval: encoding %d train and %d test images', len(ds.train_images), n_test)
  train_z = apply_in_batches(mesh, make_encode_fn(mesh, model), params, train_dev,
                             len(ds.train_images), batch)
  test = apply_in_batches(mesh, make_batched_fn(mesh, test_outputs), params, test_dev, n_test,
                          batch)
  shown_out = apply_in_batches(mesh, make_batched_fn(mesh, shown), params, test_dev,
                               min(NUM_SHOWN, n_test), batch)
  return Inputs(config, model, params, mesh, ds, train_z, test, shown_out, test_dev)
