import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae import model as model_lib
from ae.model import AutoEncoder, PatchConv, max_pool_2x2


def _init(model, n=2):
  x = jax.random.uniform(jax.random.key(1), (n, 32, 32, 3))
  return model.init(jax.random.key(0), x[:1]), x


def test_seed_architecture_parameter_count_and_shapes():
  model = AutoEncoder()
  params, x = _init(model)
  assert sum(p.size for p in jax.tree.leaves(params)) == 9_038_410
  z = model.apply(params, x, method=model.encode)
  y = model.apply(params, x)
  assert z.shape == (2, 10) and y.shape == (2, 32, 32, 3)
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # sigmoid output


def test_encode_then_decode_equals_call():
  for model in (AutoEncoder(), AutoEncoder(decoder='conv', decoder_features=(32, 16, 8),
                                           encoder_padding='SAME', norm='group')):
    params, x = _init(model)
    z = model.apply(params, x, method=model.encode)
    np.testing.assert_array_equal(model.apply(params, z, method=model.decode), model.apply(params, x))


def test_latent_dim_and_conv_decoder_shapes():
  model = AutoEncoder(latent_dim=32, decoder='conv', decoder_features=(64, 32, 16))
  params, x = _init(model)
  assert model.apply(params, x, method=model.encode).shape == (2, 32)
  assert model.apply(params, x).shape == (2, 32, 32, 3)


def test_patch_conv_matches_flax_conv_values_and_gradients():
  x = jax.random.normal(jax.random.key(2), (3, 13, 11, 5))
  for padding in ('VALID', 'SAME'):
    ours, ref = PatchConv(7, (3, 3), padding=padding), nn.Conv(7, (3, 3), padding=padding)
    params = ref.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(lambda p, x: jnp.sum(jnp.sin(ours.apply(p, x))), argnums=(0, 1))(params, x)
    g_ref = jax.grad(lambda p, x: jnp.sum(jnp.sin(ref.apply(p, x))), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('lowering', ['xla_forward', 'xla'])
def test_patch_conv_through_xla_convolution_gives_the_same_values_and_gradients(lowering):
  """XLA's convolution forward (and for 'xla' its gradients as convolutions; pooled, with fewer
  than 8 input channels, pooled_phase_conv) against the patches, odd sizes, with and without
  pooling: the same values and gradients up to rounding."""
  cases = [(c, padding, pool) for c in (6, 9) for padding in ('VALID', 'SAME') for pool in (0, 1)]
  for channels, padding, pool in cases:
    x = jax.random.normal(jax.random.key(5), (2, 15, 13, channels))
    conv = PatchConv(8, padding=padding, pool=bool(pool))
    params = jax.tree.map(lambda p: p + 0.3, conv.init(jax.random.key(0), x))
    np.testing.assert_allclose(conv.apply(params, x, lowering), conv.apply(params, x),
                               rtol=1e-5, atol=1e-4)  # outputs up to ~40
    grads = [jax.grad(lambda p, x, l=l: jnp.sum(jnp.sin(conv.apply(p, x, l))),
                      argnums=(0, 1))(params, x) for l in (lowering, 'patches')]
    for a, b in zip(*map(jax.tree.leaves, grads)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_pooled_phase_conv_is_the_pooled_convolution_with_its_gradients_to_the_bit():
  """On small integers (exact sums, many ties in the pooling) the phase form gives the pooled
  convolution's values and both gradients exactly, odd input sizes included."""
  ints = lambda key, shape, lo, hi: jax.random.randint(key, shape, lo, hi).astype(jnp.float32)
  x = ints(jax.random.key(7), (3, 17, 20, 3), 0, 3)[:, :16]  # outputs 14 x 18, pooled 7 x 9
  kernel = ints(jax.random.key(8), (3, 3, 3, 5), -1, 2)
  pooled = lambda x, k: max_pool_2x2(model_lib._conv(x, k))
  np.testing.assert_array_equal(model_lib.pooled_phase_conv(x, kernel), pooled(x, kernel))
  dp = jax.random.normal(jax.random.key(9), (3, 7, 9, 5))
  grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * dp), argnums=(0, 1))(x, kernel)
           for f in (model_lib.pooled_phase_conv, pooled)]
  for ours, ref in zip(*grads):
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize('decoder, features, convs', [('dense', (16,), 2), ('conv', (8, 4, 4), 6)])
def test_xla_convolutions_in_the_form_xla_cpu_runs_fast(decoder, features, convs):
  """On CPU devices evaluation runs XLA's convolutions forward (the encoder's two and the conv
  decoder's four) with the patches' gradient, training runs the encoder's pooled convolution (the
  first of two, by pooling phases) and its kernel gradient as XLA convolutions and the rest as
  patches. Every convolution, even in a gradient inside a loop (the train step's lax.scan, the
  code refinement's), compiles in the one form XLA:CPU's fast convolution takes (JAX's own
  gradient of a convolution does not there). Training and evaluation give the same values up to
  rounding."""
  model = AutoEncoder(encoder_features=(4, 8), decoder=decoder, decoder_features=features)
  params, x = _init(model)
  np.testing.assert_allclose(model.apply(params, x), model.apply(params, x, True),
                             rtol=1e-5, atol=1e-6)

  def scanned(train):  # gradient steps inside a lax.scan
    def body(p, _):
      g = jax.grad(lambda p: jnp.sum(model.apply(p, x, train) ** 2))(p)
      return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), None
    return lambda p: jax.lax.scan(body, p, None, length=2)[0]

  for train, expected in ((False, convs), (True, 2)):
    compiled = jax.jit(scanned(train)).lower(params).compile().as_text()
    lines = [l for l in compiled.splitlines() if ' convolution(' in l]
    assert len(lines) == expected, (train, lines)
    assert all('dim_labels=b01f_01io->b01f' in l for l in lines), (train, lines)


def test_written_out_is_the_identity_and_read_from_a_buffer():
  """written_out(x) is x to the bit, and the kernel gradient of a convolution through XLA's
  (xla_conv) transposes the input it wrote out instead of recomputing the input's producers (a
  max pool and a relu) in that transpose."""
  for shape in ((128, 32, 32, 3), (3, 5, 7)):
    x = jax.random.normal(jax.random.key(4), shape) * 1e3
    x = x.at[0, 0].set(0.0)
    np.testing.assert_array_equal(jax.jit(model_lib.written_out)(x), x)

  def kernel_grad(kernel, y):
    x = jax.nn.relu(max_pool_2x2(y))
    return jax.grad(lambda k: jnp.sum(model_lib.xla_conv(x, k) ** 2))(kernel)
  y = jax.random.normal(jax.random.key(6), (8, 14, 14, 4))
  hlo = jax.jit(kernel_grad).lower(jnp.ones((3, 3, 4, 5)), y).compile().as_text()
  computations = {b.strip().split(' ', 1)[0].lstrip('%'): b for b in hlo.split('\n\n')}
  transposed = [l for l in hlo.splitlines() if ' = f32[4,7,7,8]' in l]
  assert transposed, hlo  # the input as [C, H, W, N], the kernel gradient's left-hand side
  for line in transposed:  # a fusion that makes it must not hold the pooling
    if 'calls=%' in line:
      body = computations[line.split('calls=%')[1].split(',')[0].split(' ')[0]]
      assert 'maximum(' not in body, body


def test_max_pool_matches_flax_max_pool_on_odd_sizes():
  x = jax.random.normal(jax.random.key(3), (2, 13, 15, 4))
  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


def _seed_order_encode(params, x, norm):
  """The seed's encoder from flax's own layers: per width conv (+ norm), relu, max pool."""
  enc = params['params']['encoder']
  n = len([k for k in enc if k.startswith('Conv_')])
  for i in range(n):
    conv = enc[f'Conv_{i}']
    x = nn.Conv(conv['kernel'].shape[-1], (3, 3), padding='VALID').apply({'params': conv}, x)
    if norm == 'group':
      gn = nn.GroupNorm(num_groups=min(8, x.shape[-1]))
      x = gn.apply({'params': enc[f'GroupNorm_{i}']}, x)
    x = nn.relu(x)
    if i + 1 < n:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
  h = x.reshape(x.shape[0], -1)
  for i in range(len([k for k in enc if k.startswith('hidden_')])):  # model.encoder_dense
    layer = enc[f'hidden_{i}']
    h = nn.relu(nn.Dense(layer['kernel'].shape[-1]).apply({'params': layer}, h))
  return nn.Dense(10).apply({'params': enc['bottleneck']}, h)


def test_encoder_equals_the_seed_layer_order_with_and_without_norm():
  for norm in ('none', 'group'):
    model = AutoEncoder(norm=norm)
    params, x = _init(model, n=4)
    ours = model.apply(params, x, method=model.encode)
    np.testing.assert_allclose(ours, _seed_order_encode(params, x, norm), rtol=1e-5, atol=1e-5)


def test_encoder_dense_layers_sit_between_the_convs_and_the_bottleneck():
  model = AutoEncoder(encoder_dense=(64, 32))
  params, x = _init(model, n=4)
  enc = params['params']['encoder']
  assert enc['hidden_0']['kernel'].shape == (4 * 4 * 128, 64)
  assert enc['hidden_1']['kernel'].shape == (64, 32)
  assert enc['bottleneck']['kernel'].shape == (32, 10)
  ours = model.apply(params, x, method=model.encode)
  np.testing.assert_allclose(ours, _seed_order_encode(params, x, 'none'), rtol=1e-5, atol=1e-5)


def test_encoder_dropout_masks_the_dense_inputs_in_training_only():
  rate = 0.25
  model = AutoEncoder(encoder_dense=(64,), encoder_dropout=rate)
  params, x = _init(model, n=8)
  # evaluation: no dropout, the same encoding as without it
  ours = model.apply(params, x, method=model.encode)
  np.testing.assert_allclose(ours, _seed_order_encode(params, x, 'none'), rtol=1e-5, atol=1e-5)
  rngs = lambda k: {'dropout': jax.random.key(k)}
  train_z, inter = model.apply(params, x, True, method=model.encode, rngs=rngs(1),
                               capture_intermediates=True)
  enc = inter['intermediates']['encoder']
  # each dense layer's input is its clean input, zeroed with probability rate or scaled by 1/(1-rate)
  clean_in = [np.maximum(np.asarray(enc['Conv_2']['__call__'][0]), 0).reshape(8, -1)]
  clean_in.append(np.maximum(np.asarray(enc['hidden_0']['__call__'][0]), 0))
  dropped = 0
  for i, clean in enumerate(clean_in):
    out = np.asarray(enc[f'dropout_{i}']['__call__'][0])
    kept = out != 0
    np.testing.assert_allclose(out[kept], clean[kept] / (1 - rate), rtol=1e-5)
    live = clean != 0
    dropped += np.sum(live & ~kept) / np.sum(live)
  assert abs(dropped / 2 - rate) < 0.05
  assert not np.allclose(train_z, ours)
  np.testing.assert_array_equal(
      train_z, model.apply(params, x, True, method=model.encode, rngs=rngs(1)))  # same key, same mask
  assert not np.allclose(train_z, model.apply(params, x, True, method=model.encode, rngs=rngs(2)))


def test_patch_conv_with_pool_equals_pool_of_conv_plus_bias():
  x = jax.random.normal(jax.random.key(4), (2, 15, 13, 6))  # odd conv outputs: edges dropped
  for padding in ('VALID', 'SAME'):
    plain, pooled = PatchConv(8, padding=padding), PatchConv(8, padding=padding, pool=True)
    params = plain.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p + 0.3, params)  # a nonzero bias
    ours = pooled.apply(params, x)
    np.testing.assert_allclose(ours, max_pool_2x2(plain.apply(params, x)), rtol=1e-6, atol=1e-6)
    g_pooled = jax.grad(lambda p, x: jnp.sum(jnp.sin(pooled.apply(p, x))), argnums=(0, 1))
    g_plain = jax.grad(lambda p, x: jnp.sum(jnp.sin(max_pool_2x2(plain.apply(p, x)))),
                       argnums=(0, 1))
    for a, b in zip(jax.tree.leaves(g_pooled(params, x)), jax.tree.leaves(g_plain(params, x))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
