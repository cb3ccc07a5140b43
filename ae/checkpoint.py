"""Orbax checkpoints: params, optimizer state and a JSON record of the step and param shapes.

Params and optimizer state are separate items so that `train.init_from` can take only the
weights of another run, whatever optimizer it used.
"""

import contextlib
import logging as logging_std
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

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
  _quiet_orbax()
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=ITEMS)


def open_readonly(path):
  _quiet_orbax()
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


def read_meta(mngr, step):
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def check_shapes(mngr, params, where, step):
  """Raises CheckpointError when the checkpoint's parameters differ from the model's."""
  saved, ours = read_meta(mngr, step)['param_shapes'], param_shapes(params)
  if saved != ours:
    diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    first = diff[0]
    raise CheckpointError(
        f'{where} was made with a different model: {len(diff)} parameter(s) differ, e.g. '
        f'{first} is {saved.get(first, "absent")} there but {ours.get(first, "absent")} in this '
        'config. Use the same model.* settings, or another workdir.')


def restore_newest(mngr, restore, where):
  """(step, restore(step)) for the newest step that restores, and the newer ones that did not.

  A checkpoint that does not restore (a disk that filled, a copy cut short) is named in a warning
  and the one before it tried; only when none restores is it an error. A CheckpointError from
  restore (a model that does not fit) is no damage: it stops at once.
  """
  damaged = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return step, restore(step), damaged
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many kinds)
      logging.warning('%s: the checkpoint of step %d (%s) does not restore (%s: %.300s); trying '
                      'the one before it.', where, step, os.path.join(mngr.directory, str(step)),
                      type(e).__name__, e)
      damaged.append(step)
  raise CheckpointError(f'{where}: no checkpoint restores (steps {", ".join(map(str, damaged))} '
                        f'in {mngr.directory} are damaged). Restore a copy, or move the directory '
                        'away to start afresh.')


class _OrbaxNoise(logging_std.Filter):
  """Drops two kinds of report that say nothing this project does not say once, clearly: asyncio's
  of each array read or write that a failed restore or save abandoned, and orbax's own (several
  tracebacks from its threads) of a write that found the disk full, which main.py reports in one
  line."""

  def filter(self, record):
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    if 'Task exception was never retrieved' in text and 'orbax' in text:
      return False  # an array read or write orbax abandoned after the failure it raised
    return not ('orbax' in record.pathname and any(
        s in text for s in ('RESOURCE_EXHAUSTED', 'No space left on device')))


def _quiet_orbax():
  """Installs _OrbaxNoise (once), and drops the unraisable RuntimeError('Event loop is closed')
  that each write or read still in flight raises when a failed save or restore has closed orbax's
  event loop."""
  previous = sys.unraisablehook
  if getattr(previous, 'quiets_orbax', False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.quiets_orbax = True
  sys.unraisablehook = hook
  for name in ('asyncio', 'absl'):
    logging_std.getLogger(name).addFilter(_OrbaxNoise())


def restore_params(mngr, params, where):
  """(step, params) of the newest checkpoint that fits and restores, laid out like params."""
  def restore(step):
    check_shapes(mngr, params, where, step)
    return mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params)))['params']
  step, restored, _ = restore_newest(mngr, restore, where)
  return step, restored


def abstract_params(model_config):
  """The parameters' shapes (the same for every convolution form), computing nothing."""
  model = create_model(model_config, platform=None)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))


def load_params(model_config, path, mesh):
  """(the newest restorable checkpoint's params in path, replicated over the mesh; its step),
  checked to fit the model (--mode=eval and --mode=query)."""
  rep = parallel.replicated(mesh)
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                        abstract_params(model_config))
  step, params = restore_params(open_readonly(path), target, f'the run in {path}')
  return params, step


def open_for_training(workdir, init_from):
  """(the run's manager, train.init_from's read-only one or None: a resumed run ignores it)."""
  mngr = make_manager(workdir)
  resuming = mngr.latest_step() is not None
  return mngr, (open_readonly(init_from) if init_from and not resuming else None)


def restore_for_training(mngr, parent, shapes, workdir):
  """(the step to start from, restored (params, opt_state or None) or None) for the abstract
  (params, opt_state) shapes: the newest checkpoint of the run that restores (resume), else
  parent's parameters with a fresh optimizer (train.init_from), else nothing. The run's damaged
  newer checkpoints move to workdir/damaged_checkpoints/, so that their steps are trained and
  saved again."""
  where = f'the run in {workdir}'
  if mngr.latest_step() is not None:
    def restore(step):
      check_shapes(mngr, shapes[0], where, step)
      r = mngr.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(shapes[0]),
          opt_state=ocp.args.StandardRestore(shapes[1])))
      return r['params'], r['opt_state']
    step, restored, damaged = restore_newest(mngr, restore, where)
    if damaged:
      _move_aside(mngr, damaged, os.path.join(workdir, 'damaged_checkpoints'))
      logging.warning('Moved the damaged checkpoints of steps %s to %s.', damaged,
                      os.path.join(workdir, 'damaged_checkpoints'))
    logging.info('Resumed from %s at step %d.', mngr.directory, step)
    return step, restored
  if parent is not None:
    step, params = restore_params(parent, shapes[0], f'train.init_from={parent.directory}')
    logging.info('Initialised weights from %s (step %d); fresh optimizer.', parent.directory, step)
    return 0, (params, None)
  return 0, None


def with_restored(state, restored, step, mesh):
  """A fresh state with restore_for_training's parts (params, and opt_state on resume) and step."""
  if restored is None:
    return state
  params, opt_state = restored
  return state.replace(params=params, step=parallel.put(np.int32(step), parallel.replicated(mesh)),
                       opt_state=state.opt_state if opt_state is None else opt_state)


def _move_aside(mngr, steps, to):
  """Moves these steps' directories out of the manager's (process 0) and lets it see that."""
  if jax.process_index() == 0:
    os.makedirs(to, exist_ok=True)
    for step in steps:
      stamp = time.strftime('%Y%m%d-%H%M%S')
      os.replace(os.path.join(mngr.directory, str(step)), os.path.join(to, f'{step}.{stamp}'))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('damaged checkpoints moved')
  mngr.reload()
