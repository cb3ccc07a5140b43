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
  return subprocess.run([sys.executable] + list(args), cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture
def cifar10_dir():
  d = os.environ.get('CIFAR10_DIR', '')
  if not d:
    pytest.skip('CIFAR10_DIR is not set: point it at the CIFAR-10 binary files to run real-data tests')
  return d
