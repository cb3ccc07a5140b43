"""Shared helpers: the tiny config, a subprocess runner and the real-data location."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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
