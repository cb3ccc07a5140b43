"""The run directory: checked writable before anything else; the resolved config written to it."""

import os

import jax

from ae.errors import CheckpointError


def prepare(workdir):
  """Creates workdir and proves this process can write there; a clear error otherwise."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise CheckpointError(f'workdir {workdir} is not writable ({e.strerror}); choose another '
                          '--workdir or fix its permissions.') from e


def write_config(config, workdir):
  """config.json, the resolved config (process 0; replaced atomically)."""
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, 'config.json.tmp')
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, 'config.json'))
