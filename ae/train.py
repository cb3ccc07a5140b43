"""Training: the state, the optimizer, the jitted data-parallel step, the loop with checkpoints."""

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training.train_state import TrainState

from ae import checkpoint as ckpt
from ae import inference, parallel, rng, runtime, workdir as workdir_lib
from ae.augment import Augmentation
from ae.config_check import validate_config
from ae.cpu import compiler_options, host_memory
from ae.data import load_dataset, to_float
from ae.errors import ConfigError, NonFiniteLossError, Preempted
from ae.image_summaries import ReconstructionImages
from ae.metrics_log import MetricsLog
from ae.model import IMAGE_SHAPE, create_model
from ae.progress import Progress, StartupTimer


def make_optimizer(train_config, total_steps):
  """Adam or AdamW, at a constant learning rate or with warm-up and cosine decay."""
  lr = train_config.learning_rate
  if train_config.schedule == 'cosine':
    warmup = min(train_config.warmup_steps, total_steps - 1)
    lr = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps)
  if train_config.optimizer == 'adamw':
    return optax.adamw(lr, weight_decay=train_config.weight_decay)
  return optax.adam(lr)


class Init(NamedTuple):
  """fn(key) -> (params, optimizer state), replicated; key; and the model's apply_fn."""
  fn: Callable
  key: jax.Array
  apply_fn: Callable


def make_init_fn(config, mesh):
  """The run's Init. Its optimizer only gives the state's structure, which the schedule's length
  does not change."""
  model = create_model(config.model, parallel.platform(mesh))
  tx = make_optimizer(config.train, total_steps=2)

  def init(key):
    params = model.init(key, jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))
    return params, tx.init(params)

  return Init(jax.jit(init, out_shardings=parallel.replicated(mesh)),
              rng.stream(config.seed, rng.INIT), model.apply)


def create_train_state(config, mesh, total_steps, init=None, tx=None):
  """A fresh state (step 0) from init and tx, or new ones: a function compiled for one state fits
  another built from the same ones (apply_fn and tx are part of the state's structure)."""
  init = init or make_init_fn(config, mesh)
  params, opt_state = init.fn(init.key)
  return TrainState(step=parallel.put(np.int32(0), parallel.replicated(mesh)),
                    apply_fn=init.apply_fn, params=params,
                    tx=tx or make_optimizer(config.train, total_steps), opt_state=opt_state)


def train_step(state, batch_u8, key, augmentation):
  """One optimizer step on the MSE between the reconstruction of the augmented (noisy) batch and
  the clean batch; the model in training mode (dropout, the CPU convolutions' training form)."""
  clean, inputs = augmentation(to_float(batch_u8), key)

  def loss_fn(params):
    recon = state.apply_fn(params, inputs, train=True,
                           rngs={'dropout': rng.fold(key, rng.DROPOUT)})
    return jnp.mean(jnp.square(recon - clean))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), {'loss': loss}


def make_train_fn(mesh, seed, augmentation):
  """Jitted (state, images, idx_SxB) -> (state, {'loss': S}): S steps per call via lax.scan.

  The dataset stays on device; each step gathers its batch by index, split along 'data'.
  Step s draws from its own key (ae/rng.py): fresh each step and the same on resume.
  """
  batch_sharding = parallel.data_sharded(mesh, ndim=4)

  def train_steps(state, images_u8, idx_SxB):
    train_key = rng.stream(seed, rng.TRAIN)

    def body(state, idx_B):
      batch = jax.lax.with_sharding_constraint(images_u8[idx_B], batch_sharding)
      return train_step(state, batch, jax.random.fold_in(train_key, state.step), augmentation)

    return jax.lax.scan(body, state, idx_SxB)

  rep = parallel.replicated(mesh)
  return jax.jit(train_steps, donate_argnums=0, out_shardings=(rep, rep),
                 compiler_options=compiler_options.for_train_step(mesh))


def chunk_steps(train_config, steps_per_epoch, step):
  """Steps in the call that starts at step: up to the epoch's or the next checkpoint's end."""
  t = train_config
  next_ckpt = (step // t.checkpoint_every_steps + 1) * t.checkpoint_every_steps
  return min(t.steps_per_jit, steps_per_epoch - step % steps_per_epoch, next_ckpt - step)


def train(config, workdir):
  """Trains (resuming from workdir's latest checkpoint if any); returns (state, mesh, dataset).
  SIGTERM/SIGINT after the config checks saves the current step and raises Preempted."""
  validate_config(config)
  with runtime.StopRequest() as stop, workdir_lib.hold(workdir):
    trainer = _Trainer(config, workdir)
    return trainer.run(trainer.initial_state(), stop), trainer.mesh, trainer.ds


class _Trainer:
  """The training loop, and what it works with. What can fail on the config or the checkpoints
  fails before the data is loaded; the init, the first train call and the test pass compile in
  threads meanwhile (single process only: multi-host start-up stays simple)."""

  def __init__(self, config, workdir):
    self.timer, self.config, self.workdir = StartupTimer(), config, workdir
    self.mesh, t = parallel.make_mesh(), config.train
    self.init = make_init_fn(config, self.mesh)
    self.shapes = jax.eval_shape(self.init.fn, self.init.key)
    self.mngr, parent = ckpt.open_for_training(workdir, t.init_from)
    self.start_step, self.restored = ckpt.restore_for_training(self.mngr, parent, self.shapes,
                                                               workdir)
    ahead = jax.process_count() == 1
    self.compiling = [runtime.compile_ahead(self.init.fn, self.init.key)] if ahead else []
    self.timer.done('checks')
    self.ds = ds = load_dataset(config.data, config.seed)
    self.timer.done('data')
    if len(ds.train_images) < t.batch_size:
      raise ConfigError(f'{len(ds.train_images)} training images ({ds.source}) are fewer than '
                        f'train.batch_size={t.batch_size}: lower the batch or use more data.')
    self.steps_per_epoch = len(ds.train_images) // t.batch_size
    self.total_steps = self.steps_per_epoch * t.num_epochs
    self.tx = make_optimizer(t, self.total_steps)
    self.train_fn = make_train_fn(self.mesh, config.seed, Augmentation.from_config(t))
    self.sse_fn = inference.make_batched_fn(self.mesh, inference.per_image_sse(self.init.apply_fn))
    self.images = ReconstructionImages(config, self.mesh, self.init.apply_fn, len(ds.test_images))
    if ahead:
      self.compiling += self._compile_ahead()
    self.log = MetricsLog(workdir, self.start_step)  # imports TensorBoard's writer meanwhile
    self.timer.done('metrics log')
    rep = parallel.replicated(self.mesh)
    self.train_images = parallel.put(ds.train_images, rep)
    self.test_images = parallel.put(ds.test_images, rep)
    self.timer.done('to devices')
    self._order = (None, None)  # an epoch and its shuffled image indices

  def _compile_ahead(self):
    """Threads compiling the first train call, the test pass and the epoch's images for the
    arguments they get."""
    t, mesh, (params, opt_state) = self.config.train, self.mesh, self.shapes
    sds = lambda x, sharding=parallel.replicated(mesh): jax.ShapeDtypeStruct(
        np.shape(x), x.dtype, sharding=sharding)
    state = TrainState(step=sds(np.int32(0)), apply_fn=self.init.apply_fn, params=params,
                       tx=self.tx, opt_state=opt_state)
    idx = np.zeros((chunk_steps(t, self.steps_per_epoch, self.start_step), t.batch_size), np.int32)
    eval_idx = np.zeros(inference.device_batch(t.eval_batch_size, mesh), np.int32)
    image_idx = np.zeros(inference.device_batch(self.images.num, mesh), np.int32)
    return [runtime.compile_ahead(self.train_fn, state, sds(self.ds.train_images),
                                  sds(idx, parallel.data_sharded(mesh, 2, axis=1))),
            runtime.compile_ahead(self.sse_fn, params, sds(self.ds.test_images),
                                  sds(eval_idx, parallel.data_sharded(mesh))),
            runtime.compile_ahead(self.images.fn, params, sds(self.ds.test_images),
                                  sds(image_idx, parallel.data_sharded(mesh)))]

  def initial_state(self):
    """A fresh state, or the latest checkpoint's, or one with train.init_from's weights."""
    if self.compiling:
      self.compiling[0].join()
    state = ckpt.with_restored(create_train_state(self.config, self.mesh, None, self.init, self.tx),
                               self.restored, self.start_step, self.mesh)
    self.timer.done('state')
    workdir_lib.write_config(self.config, self.workdir)
    for thread in self.compiling:
      thread.join()
    self.timer.done('rest of the compilation')
    logging.info('Ready to train in %s.', self.timer.summary())
    return state

  def run(self, state, stop):
    """Dispatches each chunk of steps, then fetches the previous chunk's losses: the host waits
    for the device only where a state is checked before it is saved, and at epoch ends."""
    t, step, pending = self.config.train, self.start_step, None
    self.progress = Progress(step, self.total_steps, self.steps_per_epoch, t.batch_size,
                             t.log_every_steps)
    logging.info('%s', self.progress.plan(t))
    try:
      with host_memory.reuse_freed_memory():  # the step's temporaries stay mapped
        while step < self.total_steps and not stop.signal:
          n = chunk_steps(t, self.steps_per_epoch, step)
          state, metrics = self.train_fn(state, self.train_images, self._batch_indices(step, n))
          if pending is not None:
            self._fetch(*pending)
          pending = (step, metrics['loss'])
          step += n
          epoch_end = step % self.steps_per_epoch == 0
          ckpt_due = step % t.checkpoint_every_steps == 0 or step == self.total_steps
          if ckpt_due or epoch_end:  # never save a state whose loss was not checked
            self._fetch(*pending)
            pending = None
          if ckpt_due:
            ckpt.save(self.mngr, state)
          if epoch_end:  # the test set's reconstruction MSE, and images of a few
            eval_start = time.time()
            mse = inference.mean_squared_error(self.mesh, self.sse_fn, state.params,
                                               self.test_images, len(self.ds.test_images),
                                               t.eval_batch_size)
            self.images.write(self.log, state.params, self.test_images, step)
            self._write(self.progress.end_epoch(step // self.steps_per_epoch - 1, step, mse,
                                                eval_start))
        if stop.signal:
          if pending is not None:
            self._fetch(*pending)
          ckpt.save(self.mngr, state)
          self.mngr.wait_until_finished()
          logging.warning('%s received: saved a checkpoint at step %d in %s; run the same command '
                          'again to continue.', stop.signal, step, self.mngr.directory)
          raise Preempted(stop.signal, step)
    finally:
      self.mngr.wait_until_finished()
      self.log.close()
    return state

  def _batch_indices(self, step, n):
    """The image indices of the n batches from step on, [n, batch], split along 'data': one
    shuffle per epoch, from config.seed and the epoch alone (the same on resume, on every process)."""
    epoch, i = divmod(step, self.steps_per_epoch)
    if self._order[0] != epoch:
      order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.ds.train_images))
      self._order = (epoch, order.astype(np.int32))
    b = self.config.train.batch_size
    idx = self._order[1][i * b:(i + n) * b].reshape(n, b)
    return parallel.put(idx, parallel.data_sharded(self.mesh, 2, axis=1))

  def _fetch(self, first_step, losses):  # a chunk's losses: checked, then the records due
    losses = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      raise NonFiniteLossError(
          f'loss is {losses[bad[0]]} at step {first_step + int(bad[0]) + 1}; training stopped '
          f'without saving that state (the last good checkpoint is kept in {self.mngr.directory}).'
          f' Likely cause: train.learning_rate={self.config.train.learning_rate} is too high.')
    for record in self.progress.add_chunk(first_step, losses):
      self._write(record)

  def _write(self, record):
    self.log.write(record)
    logging.info('%s', self.progress.line(record))
