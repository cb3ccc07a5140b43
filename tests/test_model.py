import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae.cpu import lowerings
from ae.cpu.conv import CpuConv, PatchConv
from ae.cpu.lowerings import max_pool_2x2
from ae.cpu.phase_conv import pooled_phase_conv
from ae.model import AutoEncoder, create_model
from conftest import tiny_config


CPU = {'conv': CpuConv, 'pool': max_pool_2x2}  # model.conv_impl='auto' on CPU devices
FORMS = {'flax': {}, 'cpu': CPU, 'patches': {'conv': PatchConv, 'pool': max_pool_2x2}}


def _init(model, n=2):
  """(params, n images); compiled as a whole (run op by op, each op of a model compiles alone)."""
  x = jax.random.uniform(jax.random.key(1), (n, 32, 32, 3))
  return jax.jit(model.init)(jax.random.key(0), x[:1]), x


def test_seed_architecture_parameter_count_and_shapes():
  model = AutoEncoder()
  params, x = _init(model)
  assert sum(p.size for p in jax.tree.leaves(params)) == 9_038_410
  z, y = jax.jit(lambda p: (model.apply(p, x, method=model.encode), model.apply(p, x)))(params)
  assert z.shape == (2, 10) and y.shape == (2, 32, 32, 3)
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # sigmoid output


def test_encode_then_decode_equals_call():
  for model in (AutoEncoder(**CPU), AutoEncoder(decoder='conv', decoder_features=(32, 16, 8),
                                                encoder_padding='SAME', norm='group', **CPU)):
    params, x = _init(model)
    encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))
    decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
    # the same program either way: encode's output feeds decode as it feeds __call__'s decoder
    np.testing.assert_allclose(decode(params, encode(params, x)), jax.jit(model.apply)(params, x),
                               rtol=1e-6, atol=1e-7)


def test_latent_dim_and_conv_decoder_shapes():
  model = AutoEncoder(latent_dim=32, decoder='conv', decoder_features=(64, 32, 16))
  params, x = _init(model)
  z, y = jax.jit(lambda p: (model.apply(p, x, method=model.encode), model.apply(p, x)))(params)
  assert z.shape == (2, 32) and y.shape == (2, 32, 32, 3)


def test_patch_conv_matches_flax_conv_values_and_gradients():
  x = jax.random.normal(jax.random.key(2), (3, 13, 11, 5))
  for padding in ('VALID', 'SAME'):
    ours, ref = PatchConv(7, (3, 3), padding=padding), nn.Conv(7, (3, 3), padding=padding)
    params = ref.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x),
                               rtol=1e-5, atol=1e-5)
    g_ours = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(ours.apply(p, x))), argnums=(0, 1)))(
        params, x)
    g_ref = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(ref.apply(p, x))), argnums=(0, 1)))(
        params, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _output_and_grads(module, train, **kwargs):
  """Compiled (params, x) -> ((sum(sin(output)), output), its gradients for params and x)."""
  def loss(p, x):
    y = module.apply(p, x, train, **kwargs)
    return jnp.sum(jnp.sin(y)), y
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize('train', [False, True])
def test_cpu_conv_gives_the_patches_values_and_gradients(train):
  """CpuConv's forms (outside training XLA's convolution forward; in training a pooled one as
  XLA's convolution with its gradients written out, with fewer than 8 input channels by pooling
  phases) against the patches, odd sizes, with and without pooling: the same values and
  gradients up to rounding."""
  cases = [(c, padding, pool) for c in (6, 9) for padding in ('VALID', 'SAME') for pool in (0, 1)]
  for channels, padding, pool in cases:
    x = jax.random.normal(jax.random.key(5), (2, 15, 13, channels))
    cpu, patches = (cls(8, padding=padding, pool=bool(pool)) for cls in (CpuConv, PatchConv))
    params = jax.tree.map(lambda p: p + 0.3, patches.init(jax.random.key(0), x))
    (_, y_cpu), g_cpu = _output_and_grads(cpu, train)(params, x)
    (_, y_ref), g_ref = _output_and_grads(patches, train)(params, x)
    np.testing.assert_allclose(y_cpu, y_ref, rtol=1e-5, atol=1e-4)  # outputs up to ~40
    for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_pooled_phase_conv_is_the_pooled_convolution_with_its_gradients_to_the_bit():
  """On small integers (exact sums, many ties in the pooling) the phase form gives the pooled
  convolution's values and both gradients exactly, odd input sizes included."""
  ints = lambda key, shape, lo, hi: jax.random.randint(key, shape, lo, hi).astype(jnp.float32)
  x = ints(jax.random.key(7), (3, 17, 20, 3), 0, 3)[:, :16]  # outputs 14 x 18, pooled 7 x 9
  kernel = ints(jax.random.key(8), (3, 3, 3, 5), -1, 2)
  pooled = lambda x, k: max_pool_2x2(lowerings.conv(x, k))
  np.testing.assert_array_equal(jax.jit(pooled_phase_conv)(x, kernel), jax.jit(pooled)(x, kernel))
  dp = jax.random.normal(jax.random.key(9), (3, 7, 9, 5))
  grads = [jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * dp), argnums=(0, 1)))(x, kernel)
           for f in (pooled_phase_conv, pooled)]
  for ours, ref in zip(*grads):
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.slow  # pins XLA:CPU's compiled program
@pytest.mark.parametrize('decoder, features, convs', [('dense', (16,), 2), ('conv', (8, 4, 4), 6)])
def test_xla_convolutions_in_the_form_xla_cpu_runs_fast(decoder, features, convs):
  """On CPU devices evaluation runs XLA's convolutions forward (the encoder's two and the conv
  decoder's four) with the patches' gradient, training runs the encoder's pooled convolution (the
  first of two, by pooling phases) and its kernel gradient as XLA convolutions and the rest as
  patches. Every convolution, even in a gradient inside a loop (the train step's lax.scan, the
  code refinement's), compiles in the one form XLA:CPU's fast convolution takes (JAX's own
  gradient of a convolution does not there). Training and evaluation give the same values up to
  rounding."""
  model = AutoEncoder(encoder_features=(4, 8), decoder=decoder, decoder_features=features, **CPU)
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


@pytest.mark.slow  # pins XLA:CPU's compiled program
def test_written_out_is_the_identity_and_read_from_a_buffer():
  """written_out(x) is x to the bit, and the kernel gradient of a convolution through XLA's
  (xla_conv) transposes the input it wrote out instead of recomputing the input's producers (a
  max pool and a relu) in that transpose."""
  for shape in ((128, 32, 32, 3), (3, 5, 7)):
    x = jax.random.normal(jax.random.key(4), shape) * 1e3
    x = x.at[0, 0].set(0.0)
    np.testing.assert_array_equal(jax.jit(lowerings.written_out)(x), x)

  def kernel_grad(kernel, y):
    x = jax.nn.relu(max_pool_2x2(y))
    return jax.grad(lambda k: jnp.sum(lowerings.xla_conv(x, k) ** 2))(kernel)
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


@pytest.mark.parametrize('form', FORMS)
def test_encoder_equals_the_seed_layer_order_with_and_without_norm(form):
  for norm in ('none', 'group'):
    model = AutoEncoder(norm=norm, **FORMS[form])
    params, x = _init(model, n=4)
    ours = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))(params, x)
    ref = jax.jit(_seed_order_encode, static_argnums=2)(params, x, norm)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_encoder_dense_layers_sit_between_the_convs_and_the_bottleneck():
  model = AutoEncoder(encoder_dense=(64, 32), **CPU)
  params, x = _init(model, n=4)
  enc = params['params']['encoder']
  assert enc['hidden_0']['kernel'].shape == (4 * 4 * 128, 64)
  assert enc['hidden_1']['kernel'].shape == (64, 32)
  assert enc['bottleneck']['kernel'].shape == (32, 10)
  ours = model.apply(params, x, method=model.encode)
  np.testing.assert_allclose(ours, _seed_order_encode(params, x, 'none'), rtol=1e-5, atol=1e-5)


def test_encoder_dropout_masks_the_dense_inputs_in_training_only():
  rate = 0.25
  model = AutoEncoder(encoder_dense=(64,), encoder_dropout=rate, **CPU)
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
    ours = jax.jit(pooled.apply)(params, x)
    ref = jax.jit(lambda p, x: max_pool_2x2(plain.apply(p, x)))(params, x)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    g_pooled = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(pooled.apply(p, x))), argnums=(0, 1)))
    g_plain = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(max_pool_2x2(plain.apply(p, x)))),
                               argnums=(0, 1)))
    for a, b in zip(jax.tree.leaves(g_pooled(params, x)), jax.tree.leaves(g_plain(params, x))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_create_model_takes_the_convolution_form_from_conv_impl_and_the_platform():
  auto, flax_form = tiny_config(), tiny_config(model__conv_impl='flax')
  assert create_model(auto.model, 'cpu').conv is CpuConv
  assert create_model(auto.model, 'gpu').conv is PatchConv
  for platform in ('cpu', 'gpu'):
    model = create_model(flax_form.model, platform)
    assert model.conv is not CpuConv and issubclass(model.conv, nn.Conv)


ARCHITECTURES = {
    'seed': {},
    'conv_decoder_group_norm_dense_head': dict(
        encoder_features=(8, 16, 16), encoder_padding='SAME', norm='group', decoder='conv',
        decoder_features=(16, 8, 8), encoder_dense=(32,)),
}


@pytest.mark.parametrize('arch', ARCHITECTURES)
def test_every_convolution_form_gives_the_same_outputs_and_gradients(arch):
  """nn.Conv with nn.max_pool ('flax'), the patches (other platforms' 'auto') and the CPU forms
  share one parameter tree, and agree to float rounding in evaluation and in training."""
  models = {name: AutoEncoder(**ARCHITECTURES[arch], **form) for name, form in FORMS.items()}
  params, x = _init(models['flax'], n=4)
  for model in models.values():  # one parameter tree for all
    assert jax.tree.structure(jax.eval_shape(model.init, jax.random.key(0), x[:1])) == (
        jax.tree.structure(params))
  for train in (False, True):
    (_, ref_out), (ref_grad, _) = _output_and_grads(models['flax'], train)(params, x)
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(ref_grad))
    for name in ('cpu', 'patches'):
      (_, out), (grad, _) = _output_and_grads(models[name], train)(params, x)
      np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
      for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):  # (a conv bias before a
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale)  # norm: a zero gradient)


def test_depth_to_space_against_numpy():
  from ae.model import depth_to_space_2x
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4 * 3)).astype(np.float32)
  ref = np.zeros((2, 6, 10, 3), np.float32)
  for y in range(3):
    for xx in range(5):
      for a in range(2):
        for b in range(2):
          ref[:, 2 * y + a, 2 * xx + b] = x[:, y, xx, (2 * a + b) * 3:(2 * a + b + 1) * 3]
  np.testing.assert_array_equal(depth_to_space_2x(jnp.asarray(x)), ref)


def test_conv_decoder_against_flax_layers():
  """Dense to a 4x4 map, per width a SAME 3x3 convolution to 4x the channels, sub-pixel
  upsampling (NumPy) and relu, then a 3-channel convolution and a sigmoid."""
  model = AutoEncoder(decoder='conv', decoder_features=(8, 4, 4), **CPU)
  params, _ = _init(model)
  dec = params['params']['decoder_net']
  z = jax.random.normal(jax.random.key(2), (3, 10))
  h = nn.Dense(4 * 4 * 8).apply({'params': dec['Dense_0']}, z)
  h = np.maximum(np.asarray(h), 0).reshape(3, 4, 4, 8)
  for i in range(4):
    layer = dec[f'PatchConv_{i}']
    h = np.asarray(nn.Conv(layer['kernel'].shape[-1], (3, 3), padding='SAME').apply(
        {'params': layer}, h))
    if i < 3:
      n, hh, ww, c4 = h.shape
      h = h.reshape(n, hh, ww, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
      h = np.maximum(h.reshape(n, 2 * hh, 2 * ww, c4 // 4), 0)
  ref = 1 / (1 + np.exp(-h))
  np.testing.assert_allclose(model.apply(params, z, method=model.decode), ref, rtol=1e-5,
                             atol=1e-6)
