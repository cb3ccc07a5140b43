"""Shared helpers: the tiny config, a subprocess runner and the real-data location."""

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One persistent XLA compilation cache for the session, inherited by every subprocess: the suite
# compiles the same tiny programs in dozens of processes, and XLA:CPU spends ~3 s at -O3 on each
# program holding a threefry random draw (the model's init alone took 12 s per process). The cache
# key is the whole compiled computation with its flags, so results are unchanged; a damaged entry
# (a process killed while writing it) is a warning and a recompilation. Each pytest-xdist worker
# has a cache of its own: without a lock (which needs the filelock package) the cache's writes are
# not safe against another process reading the same entry.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ or os.environ.get('AE_TESTS_XLA_CACHE'):
  _XLA_CACHE = os.environ.get('AE_TESTS_XLA_CACHE') or tempfile.mkdtemp(prefix='ae-tests-xla-')
  if 'AE_TESTS_XLA_CACHE' not in os.environ:  # this process made it (pytest, or xdist's controller)
    os.environ['AE_TESTS_XLA_CACHE'] = _XLA_CACHE
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  _XLA_CACHE = os.path.join(_XLA_CACHE, os.environ.get('PYTEST_XDIST_WORKER', 'serial'))
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  if 'jax' in sys.modules:  # imported before this file (a plugin): it read the variables already
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', _XLA_CACHE)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

# XLA:CPU's LLVM backend at -O0 for every process of the suite: most of the suite's time is
# compiling small programs, which then compile in about half the time. It changes float rounding,
# so run_python keeps it in any XLA_FLAGS a test sets: the numbers a test compares all come from
# programs compiled alike. Users' runs and the benchmarks compile at XLA's default level.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

from configs import test as test_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_config(**overrides):
  """configs/test.py with eval off unless asked, plus dotted overrides ('train.num_epochs'=1)."""
  config = test_config.get_config()
  config.eval.enabled = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_python(args, env_extra=None, timeout=600, cwd=ROOT):
  """Runs `python args...` in the repo; returns the CompletedProcess (text)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')]))
  env.update(env_extra or {})
  if 'xla_backend_optimization_level' not in env.get('XLA_FLAGS', ''):
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
  return subprocess.run([sys.executable] + list(args), cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture
def cifar10_dir():
  d = os.environ.get('CIFAR10_DIR', '')
  if not d:
    pytest.skip('CIFAR10_DIR is not set: point it at the CIFAR-10 binary files to run real-data tests')
  return d


@pytest.fixture(scope='session')
def run_dir(tmp_path_factory):
  """A finished main.py run of configs/test.py (train, then evaluate with refined codes), made once
  for the session even under pytest-xdist (its workers share the base temporary directory's
  parent). No UMAP: its numba compilation is most of a run's time, and tests/test_projection.py
  draws it in-process."""
  shared = tmp_path_factory.getbasetemp()
  if 'PYTEST_XDIST_WORKER' in os.environ:
    shared = shared.parent
  workdir = shared / 'e2e' / 'run'
  with open(shared / 'e2e.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker runs it; the others wait, then read it
    if not (workdir / 'results.json').exists():
      shutil.rmtree(workdir, ignore_errors=True)
      proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={workdir}',
                         '--config.eval.refine_steps=5', '--config.eval.umap_points=0'])
      assert proc.returncode == 0, proc.stderr[-3000:]
      assert 'imgs/s' in proc.stderr and 'ETA' in proc.stderr  # the progress line
  return workdir


# A short run of configs/test.py for the fault tests: 4 epochs of 8 steps, a checkpoint every 4.
FAULT_ARGS = ['main.py', '--config=configs/test.py', '--config.eval.enabled=False',
              '--config.train.num_epochs=4', '--config.train.checkpoint_every_steps=4']


def popen_main(workdir, extra=()):
  """main.py on FAULT_ARGS in workdir, started (pipes for stdout and stderr)."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable] + FAULT_ARGS + [f'--workdir={workdir}'] + list(extra),
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def final_params(workdir):
  """The parameters of a FAULT_ARGS run's last checkpoint (step 32), as NumPy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  from ae import checkpoint as ckpt, parallel  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top
  params, step = ckpt.load_params(test_config.get_config().model, str(workdir),
                                  parallel.make_mesh())
  assert step == 32
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def records(workdir):
  """metrics.jsonl's records, each step's once (a torn or duplicated line fails)."""
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  rows = [json.loads(l) for l in lines]  # a torn line would raise here
  keys = [(r['step'], 'test/mse' in r) for r in rows]
  assert len(keys) == len(set(keys)), 'duplicated records'
  return rows


@pytest.fixture(scope='session')
def reference(tmp_path_factory):
  """An uninterrupted run of FAULT_ARGS, trained in this process: the same programs as main.py's."""
  from ae import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('ref')
  train.train(tiny_config(train__num_epochs=4, train__checkpoint_every_steps=4), str(workdir))
  return workdir


# The files that take longest, in that order: pytest-xdist hands whole files to the workers in
# collection order, and starting the longest first lets the two workers end together.
_LONGEST_FIRST = ('test_workdir_faults.py', 'test_faults.py', 'test_model.py', 'test_main.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as collected
