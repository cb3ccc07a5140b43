"""The run directory: held by one run at a time, checked writable first, the config written to it."""

import contextlib
import fcntl
import os
import socket

import jax

from ae.errors import CheckpointError, WorkdirInUseError

LOCK_FILE = '.lock'
_held = set()  # the workdirs this process holds


@contextlib.contextmanager
def hold(workdir):
  """Holds workdir for the run's life: an OS lock on workdir/.lock, which the kernel releases when
  the process ends however it ends. A second run of the same workdir (a requeued job whose first
  copy still runs) stops at once instead of rewriting the first one's records. Process 0 holds it
  for all processes of a run; a process may hold it again inside its own hold."""
  prepare(workdir)
  key = os.path.realpath(workdir)
  if jax.process_index() != 0 or key in _held:  # another process's to hold, or held here already
    yield
    return
  f = open(os.path.join(workdir, LOCK_FILE), 'a+')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or 'a process that has not written its name yet'
    f.close()
    raise WorkdirInUseError(f'workdir {workdir} is in use by another run ({holder}): wait for it to '
                            'end or stop it, or give this run another --workdir.') from None
  f.seek(0)
  f.truncate()
  f.write(f'host {socket.gethostname()}, pid {os.getpid()}\n')
  f.flush()
  _held.add(key)
  try:
    yield
  finally:
    _held.discard(key)
    f.close()  # closing the file releases the lock


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
