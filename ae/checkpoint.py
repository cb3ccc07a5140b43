"""Orbax checkpoints: params, optimizer state and a JSON record of the step and param shapes.

Params and optimizer state are separate items so that `train.init_from` can take only the
weights of another run, whatever optimizer it used.
"""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ae import parallel
from ae.errors import CheckpointError
from ae.model import IMAGE_SHAPE, create_model

ITEMS = ('params', 'opt_state', 'meta')


def checkpoint_dir(path):
  """Accepts a run's workdir or its checkpoints/ directory; returns the latter."""
  path = os.path.abspath(path)
  sub = os.path.join(path, 'checkpoints')
  return sub if os.path.isdir(sub) else path


def make_manager(workdir, max_to_keep=3):
  """The run's manager; the train loop decides when to save (every N steps, at the end, on SIGTERM)."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=ITEMS)


def open_readonly(path):
  d = checkpoint_dir(path)
  if not os.path.isdir(d):
    raise CheckpointError(f'no checkpoint directory at {path}: expected a run workdir holding '
                          'checkpoints/ or an orbax checkpoints directory.')
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  with _without_read_only_notice():
    mngr = ocp.CheckpointManager(d, options=options, item_names=ITEMS)
  if mngr.latest_step() is None:
    raise CheckpointError(f'{d} holds no finished checkpoint (nothing to restore from).')
  return mngr


@contextlib.contextmanager
def _without_read_only_notice():
  """orbax logs the warning 'Given directory is read only=...' for every manager opened
  read-only, as open_readonly's are on purpose (eval, query, init_from): it says nothing about the
  directory's permissions, so it is dropped here; every other log line passes."""
  def keep(record):
    return not record.getMessage().startswith('Given directory is read only')
  logger = logging.get_absl_logger()
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def param_shapes(params):
  return {jax.tree_util.keystr(p): list(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def save(mngr, state):
  """Saves state at its step (asynchronously); a step already saved is left as it is."""
  if int(state.step) in mngr.all_steps():
    return False
  meta = {'step': int(state.step), 'param_shapes': param_shapes(state.params)}
  return mngr.save(int(state.step), force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      meta=ocp.args.JsonSave(meta)))


def read_meta(mngr, step=None):
  step = mngr.latest_step() if step is None else step
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def check_shapes(mngr, params, where):
  """Raises CheckpointError when the checkpoint's parameters differ from the model's."""
  saved, ours = read_meta(mngr)['param_shapes'], param_shapes(params)
  if saved != ours:
    diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    first = diff[0]
    raise CheckpointError(
        f'{where} was made with a different model: {len(diff)} parameter(s) differ, e.g. '
        f'{first} is {saved.get(first, "absent")} there but {ours.get(first, "absent")} in this '
        'config. Use the same model.* settings, or another workdir.')


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_state(mngr, state):
  """Returns (params, opt_state, step) of the latest checkpoint, laid out like `state`."""
  step = mngr.latest_step()
  r = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(state.params)),
      opt_state=ocp.args.StandardRestore(_abstract(state.opt_state))))
  return r['params'], r['opt_state'], step


def restore_params(mngr, params):
  """The latest checkpoint's params, laid out like `params`."""
  r = mngr.restore(mngr.latest_step(),
                   args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(params))))
  return r['params']


def abstract_params(model_config):
  """The parameters' shapes (the same for every convolution form), computing nothing."""
  model = create_model(model_config, platform=None)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))


def load_params(model_config, path, mesh):
  """(the latest checkpoint's params in path, replicated over the mesh; its step), checked to fit
  the model (--mode=eval and --mode=query)."""
  mngr = open_readonly(path)
  shapes = abstract_params(model_config)
  check_shapes(mngr, shapes, f'the checkpoint in {path}')
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
  return restore_params(mngr, target), mngr.latest_step()


def open_for_training(workdir, init_from, params):
  """(the run's manager, train.init_from's read-only one or None), each checked to fit params
  (shapes are enough): a resumed run ignores init_from."""
  mngr = make_manager(workdir)
  resuming = mngr.latest_step() is not None
  parent = open_readonly(init_from) if init_from and not resuming else None
  if resuming:
    check_shapes(mngr, params, f'the checkpoint in {workdir}')
  if parent is not None:
    check_shapes(parent, params, f'train.init_from={init_from}')
  return mngr, parent


def restore_for_training(state, mngr, parent, mesh):
  """state with the latest checkpoint's parameters, optimizer state and step (resume), or with
  parent's parameters and a fresh optimizer (train.init_from), or as it is."""
  if mngr.latest_step() is not None:
    params, opt_state, step = restore_state(mngr, state)
    logging.info('Resumed from %s at step %d.', mngr.directory, step)
    return state.replace(params=params, opt_state=opt_state,
                         step=parallel.put(np.int32(step), parallel.replicated(mesh)))
  if parent is not None:
    logging.info('Initialised weights from %s (step %d); fresh optimizer.', parent.directory,
                 parent.latest_step())
    return state.replace(params=restore_params(parent, state.params))
  return state
