"""The run directory: held by one run at a time, checked writable first, the config written to it."""

import contextlib
import errno
import fcntl
import os
import re
import socket

import jax

from ae.errors import CheckpointError, DiskFullError, WorkdirInUseError

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
    write_whole(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))


def write_whole(path, data):
  """Writes data (str or bytes) to path whole or not at all, through a temporary file and a
  rename: an interrupted run or a full disk never leaves a truncated file behind."""
  tmp = path + '.tmp'
  with writing(tmp), open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)
  os.replace(tmp, path)


@contextlib.contextmanager
def writing(path):
  """Names path in an OSError raised within (a failed write or flush carries no file name)."""
  try:
    yield
  except OSError as e:
    if e.filename is None:
      raise OSError(e.errno, e.strerror, path) from e
    raise


def disk_full_error(error, workdir):
  """A DiskFullError for an exception that says the disk filled (ours, or orbax's and
  tensorstore's from a checkpoint write), naming the file, the last complete checkpoint and how to
  go on; None for any other exception."""
  e, texts = error, []
  while e is not None:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return DiskFullError(_full_message(e.filename, workdir))
    texts.append(str(e))
    e = e.__cause__ or e.__context__
  text = ' '.join(texts)
  if 'No space left on device' not in text and 'RESOURCE_EXHAUSTED' not in text:
    return None
  written = re.search(r'local file "([^"]+)"', text)
  return DiskFullError(_full_message(written.group(1) if written else None, workdir))


def _full_message(path, workdir):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  writing = re.search(r'/(\d+)\.orbax-checkpoint-tmp', path or '')
  if writing:  # a file inside the checkpoint orbax was writing
    path = f'the checkpoint of step {writing.group(1)}'
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()] if os.path.isdir(ckpt_dir) else []
  last = (f'the last complete checkpoint is step {max(steps)} in {ckpt_dir}' if steps
          else 'no checkpoint was complete yet')
  return (f'no space left on the device writing {path or "a file of the run"}; {last}. Free some '
          'space, then run the same command again to continue from there.')
