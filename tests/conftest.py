"""Shared helpers: the tiny config, a subprocess runner and the real-data location."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One persistent XLA compilation cache for the session, inherited by every subprocess: the suite
# compiles the same tiny programs in dozens of processes, and XLA:CPU spends ~3 s at -O3 on each
# program holding a threefry random draw (the model's init alone took 12 s per process). The cache
# key is the whole compiled computation with its flags, so results are unchanged; a damaged entry
# (a process killed while writing it) is a warning and a recompilation.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix='ae-tests-xla-cache-')
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
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
  """A finished main.py run of configs/test.py (train, then evaluate with refined codes)."""
  workdir = tmp_path_factory.mktemp('e2e') / 'run'
  proc = run_python(['main.py', '--config=configs/test.py', f'--workdir={workdir}',
                     '--config.eval.refine_steps=5'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'imgs/s' in proc.stderr and 'ETA' in proc.stderr  # the progress line
  return workdir
