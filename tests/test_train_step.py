import jax
import jax.numpy as jnp
import numpy as np

from ae import augment, parallel, rng, train
from ae.augment import Augmentation
from conftest import tiny_config


# One compiled step (static: the augmentation), as the train function runs it.
train_step = jax.jit(train.train_step, static_argnums=3)


def _setup(**overrides):
  config = tiny_config(**overrides)
  mesh = parallel.make_mesh()
  state = train.create_train_state(config, mesh, total_steps=10)
  batch = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  return state, jnp.asarray(batch)


def _loss(state, batch_u8):
  x = batch_u8.astype(jnp.float32) / 255
  return float(jnp.mean((state.apply_fn(state.params, x) - x) ** 2))


def test_one_step_lowers_the_loss_on_a_fixed_batch():
  state, batch = _setup()
  before = _loss(state, batch)
  new_state, metrics = train_step(state, batch, jax.random.key(0), Augmentation())
  assert np.isclose(float(metrics['loss']), before, rtol=1e-5)
  assert _loss(new_state, batch) < before
  assert int(new_state.step) == 1


def test_zero_noise_is_exactly_the_clean_step():
  state, batch = _setup()
  clean_state, clean_m = train_step(state, batch, jax.random.key(5), Augmentation())
  # the clean step written out by hand: MSE of the reconstruction of x against x (the model in
  # training mode, as the step runs it: outside training the encoder's convolutions are computed
  # another way, equal up to rounding)
  def by_hand(state, batch):  # compiled as the step is, so that rounding is alike
    x = batch.astype(jnp.float32) / 255
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((state.apply_fn(p, x, train=True) - x) ** 2))(state.params)
    return loss, state.apply_gradients(grads=grads)
  loss, ref = jax.jit(by_hand)(state, batch)
  assert float(clean_m['loss']) == float(loss)
  for a, b in zip(jax.tree.leaves(clean_state.params), jax.tree.leaves(ref.params)):
    np.testing.assert_array_equal(a, b)
  # ... and a different key changes nothing when noise_std is 0
  other, _ = train_step(state, batch, jax.random.key(6), Augmentation())
  for a, b in zip(jax.tree.leaves(clean_state.params), jax.tree.leaves(other.params)):
    np.testing.assert_array_equal(a, b)


def test_noisy_step_targets_the_clean_batch_with_clipped_noise():
  state, batch = _setup()
  key = jax.random.key(7)
  _, m = train_step(state, batch, key, Augmentation(noise_std=0.1))
  x = batch.astype(jnp.float32) / 255
  noisy = augment.add_noise(x, key, 0.1)
  assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
  assert 0.05 < float(jnp.std(noisy - x)) < 0.1  # clipping shrinks it a little
  expected = jnp.mean((state.apply_fn(state.params, noisy) - x) ** 2)
  np.testing.assert_allclose(float(m['loss']), float(expected), rtol=1e-6)
  wrong_target = jnp.mean((state.apply_fn(state.params, noisy) - noisy) ** 2)
  assert not np.isclose(float(m['loss']), float(wrong_target), rtol=1e-6)


def _two_step_losses(noise_std):
  """Two jitted steps on the same batch with a negligible learning rate."""
  config = tiny_config(train__learning_rate=1e-12)
  mesh = parallel.make_mesh()
  state = train.create_train_state(config, mesh, total_steps=10)
  rng = np.random.default_rng(1)
  images = parallel.put(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                        parallel.replicated(mesh))
  fn = train.make_train_fn(mesh, 0, Augmentation(noise_std=noise_std))
  idx = parallel.put(np.tile(np.arange(8, dtype=np.int32), (2, 1)), parallel.data_sharded(mesh, 2, 1))
  _, m = fn(state, images, idx)
  return np.asarray(m['loss'])


def test_noise_is_fresh_each_step_of_the_jitted_loop():
  clean = _two_step_losses(0.0)
  np.testing.assert_allclose(clean[0], clean[1], rtol=1e-6)  # same batch, same params
  noisy = _two_step_losses(0.1)
  assert abs(noisy[0] - noisy[1]) > 1e-4 * abs(noisy[0])  # only the noise differs


def test_random_flip_mirrors_input_and_target_of_about_half_the_images():
  state, batch = _setup()
  key = jax.random.key(3)
  x = batch.astype(jnp.float32) / 255
  flipped = np.asarray(augment.random_flip(x, key))
  x = np.asarray(x)
  mirrored = [np.array_equal(f, xi[:, ::-1]) for f, xi in zip(flipped, x)]
  kept = [np.array_equal(f, xi) for f, xi in zip(flipped, x)]
  assert all(m != k for m, k in zip(mirrored, kept))  # each image is one or the other
  assert 3 <= sum(mirrored) <= 13  # of 16
  # the step with flip is the clean step on the batch flipped with the step key's flip key
  _, m = train_step(state, batch, key, Augmentation(flip=True))
  expected = augment.random_flip(jnp.asarray(x), rng.fold(key, rng.FLIP))
  ref = jnp.mean((state.apply_fn(state.params, expected) - expected) ** 2)
  np.testing.assert_allclose(float(m['loss']), float(ref), rtol=1e-6)
  assert not np.isclose(float(m['loss']), _loss(state, batch), rtol=1e-6)  # it did flip


def test_random_shift_crops_each_image_from_its_reflect_padded_copy():
  state, batch = _setup()
  key = jax.random.key(5)
  x = np.asarray(batch, np.float32) / 255
  shifted = np.asarray(augment.random_shift(jnp.asarray(x), key, 2))
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
  offsets = []
  for s, p in zip(shifted, padded):
    found = [(i, j) for i in range(5) for j in range(5) if np.array_equal(s, p[i:i + 32, j:j + 32])]
    assert found, 'an image is not a 32x32 crop of its padded copy'
    offsets.append(found[0])
  assert len(set(offsets)) >= 6  # of 16 images, 25 possible offsets: they differ per image
  np.testing.assert_array_equal(augment.random_shift(jnp.asarray(x), key, 0), x)
  # the step with shift is the clean step on the batch shifted with the step key's shift key
  _, m = train_step(state, batch, key, Augmentation(shift=2))
  expected = augment.random_shift(jnp.asarray(x), rng.fold(key, rng.SHIFT), 2)
  ref = jnp.mean((state.apply_fn(state.params, expected) - expected) ** 2)
  np.testing.assert_allclose(float(m['loss']), float(ref), rtol=1e-6)
  assert not np.isclose(float(m['loss']), _loss(state, batch), rtol=1e-6)


def test_the_step_trains_with_encoder_dropout_from_the_step_key():
  state, batch = _setup(model__encoder_dropout=0.5)
  key = jax.random.key(5)
  _, m = train_step(state, batch, key, Augmentation())
  x = batch.astype(jnp.float32) / 255
  recon = state.apply_fn(state.params, x, True, rngs={'dropout': rng.fold(key, rng.DROPOUT)})
  np.testing.assert_allclose(float(m['loss']), float(jnp.mean((recon - x) ** 2)), rtol=1e-6)
  assert not np.isclose(float(m['loss']), _loss(state, batch), rtol=1e-4)  # it did drop


def test_random_noise_std_scales_each_images_noise_by_a_uniform_draw():
  key = jax.random.key(11)
  x = jnp.full((64, 32, 32, 3), 0.5, jnp.float32)  # mid-grey: 0.5 +- 5 std never clips at 0.1
  fixed = np.asarray(augment.add_noise(x, key, 0.1)) - 0.5
  spread = np.asarray(augment.add_noise(x, key, 0.1, random_std=True)) - 0.5
  # the same normal draws, each image's scaled by its own std in [0, 0.1]
  f, r = fixed.reshape(64, -1), spread.reshape(64, -1)
  per_image = np.sum(f * r, axis=1) / np.sum(f * f, axis=1)  # least-squares scale of each image
  np.testing.assert_allclose(r, per_image[:, None] * f, atol=1e-6)  # float32 rounding of 0.5 + n
  stds = 0.1 * per_image
  expected = 0.1 * np.asarray(jax.random.uniform(rng.fold(key, rng.NOISE_STD), (64,)))
  np.testing.assert_allclose(stds, expected, rtol=1e-4, atol=1e-7)
  assert stds.min() >= 0 and stds.max() <= 0.1 and stds.min() < 0.02 and stds.max() > 0.08
  # and the step trains on exactly those inputs
  state, batch = _setup()
  _, m = train_step(state, batch, key, Augmentation(0.1, random_std=True))
  clean = batch.astype(jnp.float32) / 255
  noisy = augment.add_noise(clean, key, 0.1, random_std=True)
  expected_loss = jnp.mean((state.apply_fn(state.params, noisy) - clean) ** 2)
  np.testing.assert_allclose(float(m['loss']), float(expected_loss), rtol=1e-6)
  _, m_fixed = train_step(state, batch, key, Augmentation(noise_std=0.1))
  assert not np.isclose(float(m['loss']), float(m_fixed['loss']), rtol=1e-6)


def test_the_noise_has_the_configured_std_and_no_mean_on_mid_grey():
  """On mid-grey images (0.5 +- 5 std never clips at 0.1) the input noise of a step is N(0, 0.1^2)
  per pixel: 98,304 draws pin its std to within 1% and its mean to within 0.001."""
  x = jnp.full((32, 32, 32, 3), 0.5, jnp.float32)
  noise = np.asarray(augment.add_noise(x, jax.random.key(12), 0.1)) - 0.5
  assert abs(noise.std() - 0.1) < 0.001 and abs(noise.mean()) < 0.001
  clean, inputs = Augmentation(noise_std=0.1)(x, jax.random.key(13))  # as a step draws it
  np.testing.assert_array_equal(clean, x)
  noise = np.asarray(inputs) - 0.5
  assert abs(noise.std() - 0.1) < 0.001 and abs(noise.mean()) < 0.001
