"""Training: the state, the jitted data-parallel step and the epoch loop with checkpoints."""

import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from ae import checkpoint as ckpt
from ae import host_memory, parallel
from ae.config_check import ConfigError, validate_config
from ae.data import load_dataset
from ae.metrics_log import MetricsLog
from ae.model import IMAGE_SHAPE, create_model, to_float


class NonFiniteLossError(Exception):
  """The loss became NaN or Inf; training stopped before saving the bad state."""


class TrainState(train_state.TrainState):
  pass


def make_optimizer(train_config, total_steps):
  lr = train_config.learning_rate
  if train_config.schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(0.0, lr, min(train_config.warmup_steps, total_steps - 1),
                                            total_steps)
  if train_config.optimizer == 'adamw':
    return optax.adamw(lr, weight_decay=train_config.weight_decay)
  return optax.adam(lr)


def abstract_params(config):
  """Parameter shapes of the configured model, without computing anything."""
  model = create_model(config.model)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))


def make_init_fn(config, mesh):
  """(jitted init, its key, the model's apply): init(key) -> (params, optimizer state),
  replicated over the mesh. The optimizer here only gives the state's structure, which its
  schedule's length does not change."""
  model = create_model(config.model)
  tx = make_optimizer(config.train, total_steps=2)

  def init(key):
    params = model.init(key, jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))
    return params, tx.init(params)

  init_key = jax.random.fold_in(jax.random.key(config.seed), 0)
  return jax.jit(init, out_shardings=parallel.replicated(mesh)), init_key, model.apply


def create_train_state(config, mesh, total_steps, init_fn=None, tx=None):
  """Initialises the model and optimizer (step 0), replicated over the mesh. init_fn and tx: the
  make_init_fn and make_optimizer results to use (apply_fn and tx are part of the state's pytree
  structure, so a function compiled for one state fits another built from the same ones)."""
  init_jit, init_key, apply_fn = init_fn or make_init_fn(config, mesh)
  params, opt_state = init_jit(init_key)
  return TrainState(step=parallel.put(np.int32(0), parallel.replicated(mesh)), apply_fn=apply_fn,
                    params=params, tx=tx or make_optimizer(config.train, total_steps),
                    opt_state=opt_state)


def add_noise(clean, key, noise_std, random_std=False):
  """Gaussian noise clipped to [0, 1], as the seed's add_noise_and_clip_data.

  With random_std, each image's std is drawn uniformly from [0, noise_std], so the model sees
  clean to fully noisy inputs (the same key gives the same normal draws either way).
  """
  if noise_std == 0:
    return clean
  std = noise_std
  if random_std:
    std = noise_std * jax.random.uniform(jax.random.fold_in(key, 2), (clean.shape[0], 1, 1, 1),
                                         clean.dtype)
  return jnp.clip(clean + std * jax.random.normal(key, clean.shape, clean.dtype), 0.0, 1.0)


def random_flip(images, key):
  """Mirrors each image left-right with probability 1/2 (an augmentation the test set shares)."""
  flip_B = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip_B[:, None, None, None], images[:, :, ::-1], images)


def random_shift(images, key, max_shift):
  """Translates each image by its own uniform offset in [-max_shift, max_shift] pixels along each
  axis, filling the uncovered border by reflection (a crop of the reflect-padded image)."""
  n, h, w, c = images.shape
  s = max_shift
  padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode='reflect')
  offsets_N2 = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets_N2)


def train_step(state, batch_u8, key, noise_std, flip=False, random_std=False, shift=0):
  """One Adam step on the MSE between the reconstruction of a (noisy) batch and the clean batch.

  With flip, each image (input and target alike) is mirrored with probability 1/2 first; with
  shift > 0, each is then translated by up to shift pixels (random_shift); with random_std, each
  image's noise std is uniform in [0, noise_std] (add_noise). The model runs in training mode
  (model.encoder_dropout, its mask from fold_in(key, 4)).
  """
  clean = to_float(batch_u8)
  if flip:
    clean = random_flip(clean, jax.random.fold_in(key, 1))
  if shift:
    clean = random_shift(clean, jax.random.fold_in(key, 3), shift)
  inputs = add_noise(clean, key, noise_std, random_std)

  def loss_fn(params):
    recon = state.apply_fn(params, inputs, train=True, rngs={'dropout': jax.random.fold_in(key, 4)})
    return jnp.mean(jnp.square(recon - clean))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), {'loss': loss}


def make_train_fn(mesh, seed, noise_std, flip=False, random_std=False, shift=0):
  """Jitted (state, images, idx_SxB) -> (state, {'loss': S}): S steps per call via lax.scan.

  The dataset stays on device; each step gathers its batch by index, split along 'data'.
  Noise for step s comes from fold_in(key, s), so it is fresh each step and identical on resume.
  """
  batch_sharding = parallel.data_sharded(mesh, ndim=4)

  def train_steps(state, images_u8, idx_SxB):
    noise_key = jax.random.fold_in(jax.random.key(seed), 1)

    def body(state, idx_B):
      batch = jax.lax.with_sharding_constraint(images_u8[idx_B], batch_sharding)
      return train_step(state, batch, jax.random.fold_in(noise_key, state.step), noise_std, flip,
                        random_std, shift)

    return jax.lax.scan(body, state, idx_SxB)

  rep = parallel.replicated(mesh)
  return jax.jit(train_steps, donate_argnums=0, out_shardings=(rep, rep),
                 compiler_options=parallel.step_compiler_options(mesh))


def make_batched_fn(mesh, fn):
  """Jits fn(params, batch_float, idx_B) -> per-example outputs on index batches, replicated
  (compiled with parallel.inference_compiler_options)."""
  batch_sharding = parallel.data_sharded(mesh, ndim=4)

  def apply(params, images_u8, idx_B):
    batch = jax.lax.with_sharding_constraint(images_u8[idx_B], batch_sharding)
    return fn(params, to_float(batch), idx_B)

  return jax.jit(apply, out_shardings=parallel.replicated(mesh),
                 compiler_options=parallel.inference_compiler_options(mesh))


def device_batch(batch_size, mesh):
  """batch_size rounded up to a multiple of the mesh's devices: the index batch apply_in_batches
  passes to a make_batched_fn function."""
  return -(-batch_size // mesh.size) * mesh.size


def apply_in_batches(mesh, jitted, params, images_u8, num, batch_size):
  """Runs a make_batched_fn function over the first num images; returns host arrays."""
  batch_size = device_batch(batch_size, mesh)
  outs = []
  for start in range(0, num, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = int(np.sum(idx < num))
    idx = np.minimum(idx, num - 1).astype(np.int32)  # pad with the last image; dropped below
    out = jitted(params, images_u8, parallel.put(idx, parallel.data_sharded(mesh)))
    outs.append(jax.tree.map(lambda o, v=valid: np.asarray(o)[:v], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def compile_ahead(jitted, *args):
  """Starts compiling jitted for these arguments (arrays or ShapeDtypeStructs with shardings) in
  a thread and returns it: a later call with arguments of the same shapes, dtypes and shardings
  finds the executable compiled. XLA compiles without the GIL, so several can run side by side.
  A failure here is left to the real call, which raises it again with its context."""
  def work():
    try:
      jitted.lower(*args).compile()
    except Exception as e:  # noqa: BLE001
      logging.debug('compiling ahead failed: %r', e)
  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  return thread


def per_image_sse(apply_fn):
  def fn(params, x, idx_B):
    del idx_B
    return jnp.sum(jnp.square(apply_fn(params, x) - x), axis=(1, 2, 3))
  return fn


def epoch_indices(seed, epoch, num_images, steps_per_epoch, batch_size):
  """The shuffled batch indices of one epoch, [steps, batch]; the same on every process."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_images)
  return perm[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size).astype(np.int32)


def format_eta(seconds):
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


class _StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps (preemption)."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


def write_config(config, workdir):
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, 'config.json.tmp')
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, 'config.json'))


def prepare_workdir(workdir):
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ckpt.CheckpointError(f'workdir {workdir} is not writable ({e.strerror}); choose another '
                               '--workdir or fix its permissions.') from e


def train(config, workdir):
  """Trains (resuming from workdir's latest checkpoint if any); returns (state, mesh, dataset).

  SIGTERM/SIGINT at any point after the config checks saves a checkpoint of the current step and
  raises Preempted.
  """
  validate_config(config)
  with _StopRequest() as stop:
    return _train(config, workdir, stop)


class _Phases:
  """Wall seconds of the consecutive start-up phases of the main thread, for the Ready line."""

  def __init__(self):
    self.t0 = self.t = time.time()
    self.seconds = {}

  def done(self, name):
    now = time.time()
    self.seconds[name] = now - self.t
    self.t = now

  def summary(self):
    return (f'{self.t - self.t0:.1f} s: '
            + ', '.join(f'{name} {s:.1f} s' for name, s in self.seconds.items()))


def _train(config, workdir, stop):
  phases = _Phases()
  prepare_workdir(workdir)
  mesh = parallel.make_mesh()
  t = config.train

  # Everything that can fail on the config or checkpoints fails before the data is loaded.
  mngr = ckpt.make_manager(workdir)
  resuming = mngr.latest_step() is not None
  parent = ckpt.open_readonly(t.init_from) if t.init_from and not resuming else None
  init_fn = make_init_fn(config, mesh)
  init_jit, init_key, apply_fn = init_fn
  shapes, abstract_opt_state = jax.eval_shape(init_jit, init_key)
  if resuming:
    ckpt.check_shapes(mngr, shapes, f'the checkpoint in {workdir}')
  if parent is not None:
    ckpt.check_shapes(parent, shapes, f'train.init_from={t.init_from}')

  # The three compilations (init, the first train call, the test pass) run side by side, and
  # beside the data loading: XLA compiles without the GIL (single process only: keep multi-host
  # start-up simple).
  ahead = jax.process_count() == 1
  compiling = [compile_ahead(init_jit, init_key)] if ahead else []
  phases.done('checks')
  ds = load_dataset(config.data, config.seed)
  phases.done('data')
  num_train = len(ds.train_images)
  if num_train < t.batch_size:
    raise ConfigError(f'{num_train} training images ({ds.source}) are fewer than '
                      f'train.batch_size={t.batch_size}: lower the batch or use more data.')
  steps_per_epoch = num_train // t.batch_size
  total_steps = steps_per_epoch * t.num_epochs
  rep = parallel.replicated(mesh)
  idx_sharding = parallel.data_sharded(mesh, ndim=2, axis=1)
  train_fn = make_train_fn(mesh, config.seed, t.noise_std, t.random_flip, t.random_noise_std,
                           t.random_shift)
  sse_fn = make_batched_fn(mesh, per_image_sse(apply_fn))

  def chunk_steps(step):  # steps in the call that starts at step: to the epoch's or checkpoint's end
    next_ckpt = (step // t.checkpoint_every_steps + 1) * t.checkpoint_every_steps
    return min(t.steps_per_jit, steps_per_epoch - step % steps_per_epoch, next_ckpt - step)

  tx = make_optimizer(t, total_steps)
  start_step = mngr.latest_step() or 0
  if ahead:
    sds = lambda shape, dtype, sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    state = TrainState(step=sds((), jnp.int32, rep), apply_fn=apply_fn, params=shapes,
                       tx=tx, opt_state=abstract_opt_state)
    images = lambda x: sds(x.shape, x.dtype, rep)
    compiling += [
        compile_ahead(train_fn, state, images(ds.train_images),
                      sds((chunk_steps(start_step), t.batch_size), jnp.int32, idx_sharding)),
        compile_ahead(sse_fn, shapes, images(ds.test_images),
                      sds((device_batch(t.eval_batch_size, mesh),), jnp.int32,
                          parallel.data_sharded(mesh)))]
  log = MetricsLog(workdir, start_step)  # imports TensorBoard's writer while XLA compiles
  phases.done('metrics log')
  train_images = parallel.put(ds.train_images, rep)
  test_images = parallel.put(ds.test_images, rep)
  phases.done('to devices')
  if compiling:
    compiling[0].join()
  state = create_train_state(config, mesh, total_steps, init_fn, tx)
  if resuming:
    params, opt_state, start_step = ckpt.restore_state(mngr, state)
    state = state.replace(params=params, opt_state=opt_state,
                          step=parallel.put(np.int32(start_step), rep))
    logging.info('Resumed from %s at step %d.', mngr.directory, start_step)
  elif parent is not None:
    state = state.replace(params=ckpt.restore_params(parent, state.params))
    logging.info('Initialised weights from %s (step %d); fresh optimizer.',
                 parent.directory, parent.latest_step())
  phases.done('state')
  write_config(config, workdir)
  for thread in compiling:
    thread.join()
  phases.done('rest of the compilation')
  logging.info('Ready to train in %s.', phases.summary())
  logging.info('Training %d steps (%d epochs x %d steps of %d images) from step %d; '
               'noise_std=%g%s.', total_steps, t.num_epochs, steps_per_epoch, t.batch_size,
               start_step, t.noise_std, ' (per image, uniform in [0, noise_std])'
               if t.random_noise_std and t.noise_std else '')

  timer = {'t': None, 'step': start_step, 't0': None, 'step0': start_step}
  first_epoch = start_step // steps_per_epoch
  window = {'sum': 0.0, 'n': 0}
  epoch_acc = {'sum': 0.0, 'n': 0, 't': time.time()}

  def consume(first_step, losses):
    """Fetches a finished chunk's losses, checks them and writes due log records."""
    losses = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      raise NonFiniteLossError(
          f'loss is {losses[bad[0]]} at step {first_step + int(bad[0]) + 1}; training stopped '
          f'without saving that state (the last good checkpoint is kept in {mngr.directory}). '
          f'Likely cause: train.learning_rate={t.learning_rate} is too high for this model.')
    now = time.time()
    last = first_step + len(losses)
    # Rates are known per fetched chunk (its steps ran as one call): images per second from the
    # last logged chunk's end to this chunk's end, the same on each of this chunk's lines. The
    # first chunk holds compilation: no rate, null, not a made-up number.
    first = timer['t'] is None
    if first:
      timer.update(t=now, step=last, t0=now, step0=last)
    rate = None
    if not first and now > timer['t']:
      rate = (last - timer['step']) * t.batch_size / (now - timer['t'])
    overall = (last - timer['step0']) / (now - timer['t0']) if now > timer['t0'] else 0.0
    logged = False
    for i, loss in enumerate(losses):
      s = first_step + i + 1
      window['sum'] += float(loss)
      window['n'] += 1
      epoch_acc['sum'] += float(loss)
      epoch_acc['n'] += 1
      if s % t.log_every_steps == 0 or s == total_steps:
        rec = {'step': s, 'epoch': s / steps_per_epoch, 'train/loss': window['sum'] / window['n'],
               'imgs_per_s': rate}
        log.write(rec)
        logging.info('epoch %d/%d step %d/%d loss %.5f %s imgs/s ETA %s',
                     (s - 1) // steps_per_epoch + 1, t.num_epochs, s, total_steps, rec['train/loss'],
                     '?' if rate is None else f'{rate:.0f}',
                     format_eta((total_steps - s) / overall) if overall > 0 else '?')
        window.update(sum=0.0, n=0)
        logged = True
    if logged:
      timer.update(t=now, step=last)

  def end_epoch(epoch, step):
    t_eval = time.time()
    sse = apply_in_batches(mesh, sse_fn, state.params, test_images, len(ds.test_images),
                           t.eval_batch_size)
    test_mse = float(np.sum(sse) / (sse.size * np.prod(IMAGE_SHAPE)))
    took = time.time() - epoch_acc['t']
    rec = {'step': step, 'epoch': epoch + 1,
           'train/epoch_loss': epoch_acc['sum'] / max(epoch_acc['n'], 1),
           'test/mse': test_mse, 'epoch_time_s': took,
           'epoch_imgs_per_s': epoch_acc['n'] * t.batch_size / took}
    log.write(rec)
    logging.info('epoch %d/%d done: train loss %.5f, test MSE %.5f, %.1f s (%.0f imgs/s)',
                 epoch + 1, t.num_epochs, rec['train/epoch_loss'], test_mse, took,
                 rec['epoch_imgs_per_s'])
    epoch_acc.update(sum=0.0, n=0, t=time.time())
    # The test pass is not training: keep it out of the next chunk's rate. The first one also
    # compiles, so keep it out of the ETA's average too (later ones are part of the run's pace).
    paused = time.time() - t_eval
    if timer['t'] is not None:
      timer['t'] += paused
      if epoch == first_epoch:
        timer['t0'] += paused

  step = start_step
  pending = None  # (first step, device losses) of the last dispatched chunk, fetched one later
  indices, indices_epoch = None, -1
  try:
    with host_memory.reuse_freed_memory():  # the step's temporaries stay mapped
      while step < total_steps and not stop.signal:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != indices_epoch:
          indices = epoch_indices(config.seed, epoch, num_train, steps_per_epoch, t.batch_size)
          indices_epoch = epoch
        n = chunk_steps(step)
        state, metrics = train_fn(state, train_images, parallel.put(indices[i:i + n], idx_sharding))
        if pending is not None:
          consume(*pending)
        pending = (step, metrics['loss'])
        step += n
        epoch_end = step % steps_per_epoch == 0
        ckpt_due = step % t.checkpoint_every_steps == 0 or step == total_steps
        if ckpt_due or epoch_end:
          consume(*pending)  # never save a state whose loss was not checked
          pending = None
        if ckpt_due:
          ckpt.save(mngr, state)
        if epoch_end:
          end_epoch(epoch, step)
      if stop.signal:
        if pending is not None:
          consume(*pending)
        ckpt.save(mngr, state)
        mngr.wait_until_finished()
        logging.warning('%s received: saved a checkpoint at step %d in %s; run the same command '
                        'again to continue.', stop.signal, step, mngr.directory)
        raise Preempted(stop.signal, step)
  finally:
    mngr.wait_until_finished()
    log.close()
  return state, mesh, ds


class Preempted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint of the current step was written."""

  def __init__(self, signal_name, step):
    super().__init__(f'{signal_name} at step {step}; checkpoint saved, rerun to continue')
    self.signal_name, self.step = signal_name, step


def plot_training(workdir):
  from eval import plots  # pylint: disable=g-import-not-at-top
  from ae.metrics_log import read_records  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    plots.save_loss_curves(read_records(os.path.join(workdir, 'metrics.jsonl')),
                           os.path.join(workdir, 'figures', 'loss.png'))


def train_and_evaluate(config, workdir):
  state, mesh, ds = train(config, workdir)
  plot_training(workdir)
  if config.eval.enabled:
    from eval import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate(config, workdir, state.params, mesh, ds)
  return state
