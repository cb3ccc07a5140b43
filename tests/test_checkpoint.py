import logging
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ae import checkpoint as ckpt
from ae import parallel, train
from ae.augment import Augmentation
from ae.errors import CheckpointError, Preempted
from ae.metrics_log import read_records
from conftest import tiny_config


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _assert_same(a, b):
  for x, y in zip(_params(a), _params(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('full'))
  state, _, _ = train.train(tiny_config(), workdir)
  return state, workdir


def test_checkpoint_round_trip(tmp_path):
  config = tiny_config()
  mesh = parallel.make_mesh()
  state = train.create_train_state(config, mesh, total_steps=8)
  state, _ = jax.jit(lambda s: train.train_step(s, np.zeros((4, 32, 32, 3), np.uint8),
                                                jax.random.key(0), Augmentation(0.1)))(state)
  mngr = ckpt.make_manager(str(tmp_path))
  ckpt.save(mngr, state)
  mngr.wait_until_finished()
  fresh = train.create_train_state(config, mesh, total_steps=8)
  shapes = jax.tree.map(ocp.utils.to_shape_dtype_struct, (fresh.params, fresh.opt_state))
  step, (params, opt_state) = ckpt.restore_for_training(ckpt.make_manager(str(tmp_path)), None,
                                                        shapes, str(tmp_path))
  assert step == 1
  restored = fresh.replace(params=params, opt_state=opt_state)
  _assert_same(restored, state)
  for x, y in zip(jax.tree.leaves(opt_state), jax.tree.leaves(state.opt_state)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_checkpoint_opened_read_only_logs_no_warning_about_its_directory(caplog, uninterrupted):
  state, workdir = uninterrupted
  notice = 'Given directory is read only'
  with caplog.at_level(logging.WARNING):
    ocp.CheckpointManager(ckpt.checkpoint_dir(workdir), item_names=ckpt.ITEMS,
                          options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  assert any(notice in r.getMessage() for r in caplog.records)  # orbax's own manager says it
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert ckpt.open_readonly(workdir).latest_step() == int(state.step)
  assert not any(notice in r.getMessage() for r in caplog.records)


def test_resume_after_the_end_of_an_epoch_equals_an_uninterrupted_run(tmp_path, uninterrupted):
  workdir = str(tmp_path)
  train.train(tiny_config(train__num_epochs=1), workdir)  # stops after 8 of 16 steps
  state, _, _ = train.train(tiny_config(), workdir)
  _assert_same(state, uninterrupted[0])
  steps = [r['step'] for r in read_records(os.path.join(workdir, 'metrics.jsonl'))
           if 'train/loss' in r]
  assert steps == [4, 8, 12, 16]
  ref = [r for r in read_records(os.path.join(uninterrupted[1], 'metrics.jsonl'))]
  got = read_records(os.path.join(workdir, 'metrics.jsonl'))
  assert [r.get('train/loss') for r in got] == [r.get('train/loss') for r in ref]


def test_sigterm_saves_the_current_step_and_the_rerun_finishes_identically(tmp_path, uninterrupted):
  workdir = str(tmp_path)
  metrics = os.path.join(workdir, 'metrics.jsonl')

  def preempt_after_first_record():
    deadline = time.time() + 120
    while time.time() < deadline:
      if read_records(metrics):
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.01)

  threading.Thread(target=preempt_after_first_record, daemon=True).start()
  with pytest.raises(Preempted) as e:
    train.train(tiny_config(train__checkpoint_every_steps=100), workdir)
  stopped = e.value.step
  assert 4 <= stopped < 16
  assert ckpt.open_readonly(workdir).latest_step() == stopped  # saved at the preemption step
  state, _, _ = train.train(tiny_config(train__checkpoint_every_steps=100), workdir)
  _assert_same(state, uninterrupted[0])
  steps = [r['step'] for r in read_records(metrics) if 'train/loss' in r]
  assert steps == sorted(set(steps)) and steps[-1] == 16


def test_init_from_loads_the_other_runs_weights(tmp_path, uninterrupted):
  parent_state, parent_dir = uninterrupted
  config = tiny_config(train__init_from=parent_dir, train__learning_rate=1e-12, train__num_epochs=1)
  state, _, _ = train.train(config, str(tmp_path))
  for x, y in zip(_params(state), _params(parent_state)):
    np.testing.assert_allclose(x, y, atol=1e-6)  # lr ~0: still the parent's weights
  assert int(state.step) == 8  # a fresh optimizer and step count
  # the checkpoints/ directory itself is accepted too
  config.train.init_from = os.path.join(parent_dir, 'checkpoints')
  train.train(config, str(tmp_path / 'b'))


def test_init_from_a_model_of_another_shape_fails_before_loading_data(tmp_path, uninterrupted):
  config = tiny_config(train__init_from=uninterrupted[1], model__latent_dim=7,
                       data__source='dir', data__dir=str(tmp_path / 'no_data_here'))
  with pytest.raises(CheckpointError, match='different model'):
    train.train(config, str(tmp_path / 'run'))


def test_missing_init_from_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match='no checkpoint directory'):
    train.train(tiny_config(train__init_from=str(tmp_path / 'missing')), str(tmp_path / 'run'))


def test_a_checkpoint_crosses_between_the_convolution_forms(tmp_path, uninterrupted):
  """Half a run trained with model.conv_impl='auto' (the CPU forms) resumes under 'flax' (nn.Conv,
  nn.max_pool) and ends where the whole 'auto' run ends, to float tolerance; each form then
  reconstructs with the other's checkpoint as well as with its own."""
  from ae import inference  # pylint: disable=g-import-not-at-top
  from ae.model import create_model  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path)
  train.train(tiny_config(train__num_epochs=1), workdir)
  state, mesh, ds = train.train(tiny_config(model__conv_impl='flax'), workdir)
  for x, y in zip(_params(state), _params(uninterrupted[0])):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)
  images = parallel.put(ds.test_images, parallel.replicated(mesh))
  mse = {}
  for impl in ('auto', 'flax'):
    model = create_model(tiny_config(model__conv_impl=impl).model, 'cpu')
    params, _ = ckpt.load_params(tiny_config().model, workdir, mesh)
    sse_fn = inference.make_batched_fn(mesh, inference.per_image_sse(model.apply))
    mse[impl] = inference.mean_squared_error(mesh, sse_fn, params, images, len(ds.test_images), 32)
  assert mse['auto'] == pytest.approx(mse['flax'], rel=1e-5)


def _asyncio_record(coro, error):
  """The record asyncio logs when a Task whose exception nobody read is collected."""
  try:
    raise ValueError(error)
  except ValueError:
    exc_info = sys.exc_info()
  return logging.LogRecord(
      'asyncio', logging.ERROR, '/usr/lib/python3.11/asyncio/base_events.py', 1771,
      "Task exception was never retrieved\nfuture: <Task finished name='Task-215' "
      f"coro=<{coro}() done, defined at /venv/site-packages/orbax/checkpoint/_src/serialization/"
      f"serialization.py:126> exception=ValueError('{error}')>", None, exc_info)


@pytest.mark.parametrize('coro', ['async_serialize_from_host', 'async_deserialize'])
def test_abandoned_orbax_tasks_are_not_reported_but_other_tasks_are(coro):
  noise = ckpt._OrbaxNoise()
  full = 'RESOURCE_EXHAUSTED: Error writing "0.mu.params" ... No space left on device'
  assert not noise.filter(_asyncio_record(coro, full))
  other = logging.LogRecord('asyncio', logging.ERROR, 'base_events.py', 1771,
                            'Task exception was never retrieved\nfuture: <Task coro=<fetch()>>',
                            None, None)
  assert noise.filter(other)
  assert noise.filter(logging.LogRecord('absl', logging.ERROR, 'train.py', 1, 'a real error',
                                        None, None))
