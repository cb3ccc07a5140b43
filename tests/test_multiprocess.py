"""Two processes on the JAX distributed runtime train like one process with two devices."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_python

ARGS = ['main.py', '--config=configs/test.py', '--config.eval.enabled=False',
        '--config.train.log_every_steps=1']
TWO_FAKE_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _two_processes(workdir, epochs):
  port = _free_port()
  env = dict(__import__('os').environ, PYTHONPATH=ROOT, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
             JAX_NUM_PROCESSES='2')
  procs = [subprocess.Popen([sys.executable] + ARGS + [f'--workdir={workdir}',
                                                       f'--config.train.num_epochs={epochs}'],
                            cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert '2 devices (1 local) in 2 process(es)' in outs[0][1]
  return outs


def _one_process(workdir, epochs):
  proc = run_python(ARGS + [f'--workdir={workdir}', f'--config.train.num_epochs={epochs}'],
                    env_extra=TWO_FAKE_DEVICES)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '2 devices (2 local) in 1 process(es)' in proc.stderr
  return proc


def _losses(workdir):
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  steps = [r['step'] for r in records if 'train/loss' in r]
  assert steps == sorted(set(steps)), 'duplicated or out-of-order records'
  return {r['step']: r['train/loss'] for r in records if 'train/loss' in r}


def _params(workdir):
  """The latest checkpoint's parameters, each as an array."""
  import jax  # pylint: disable=g-import-not-at-top
  from ae import checkpoint as ckpt, parallel  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  params, _ = ckpt.load_params(test_config.get_config().model, str(workdir), parallel.make_mesh())
  return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.mark.slow  # four launches, two of them of two processes each
def test_two_processes_match_one_process_and_checkpoints_cross_layouts(tmp_path):
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  _two_processes(multi, epochs=1)
  assert sorted(_losses(multi)) == list(range(1, 9))  # process 0 alone wrote: no duplicates
  _one_process(multi, epochs=2)  # resumes the 2-process checkpoint with 1 process
  _one_process(single, epochs=2)
  ref = _losses(single)
  got = _losses(multi)
  assert sorted(got) == sorted(ref) == list(range(1, 17))
  # the gradient all-reduce of two devices adds the same two numbers in one process or in two
  assert [got[s] for s in range(1, 17)] == [ref[s] for s in range(1, 17)]
  for a, b in zip(_params(multi), _params(single)):
    np.testing.assert_array_equal(a, b)
  out = _two_processes(single, epochs=3)  # and 2 processes resume a 1-process checkpoint
  assert 'at step 16' in out[0][1]
  assert sorted(_losses(single)) == list(range(1, 25))
