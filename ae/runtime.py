"""The process around the computation: start-up settings, the distributed runtime, signals, and
compiling ahead in threads."""

import contextlib
import os
import signal
import threading

import jax
from absl import logging

from ae import gpu
from ae.cpu import host_memory
from ae.errors import Preempted


def set_runtime_defaults():
  """The settings JAX and glibc read only once: GPU defaults (ae/gpu.py) and one allocator arena
  for all threads (ae/cpu/host_memory.py). Must run before the first computation or device query,
  and before any other thread allocates: main.py and the benchmarks call it first."""
  host_memory.use_one_arena()
  gpu.set_defaults()


def maybe_initialize_distributed():
  """Starts the JAX multi-controller runtime when the environment asks for several processes.

  Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID. Cluster launchers
  that JAX detects itself (SLURM, Cloud TPU, MPI) need only AE_DISTRIBUTED=1.
  """
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS') or env.get('AE_DISTRIBUTED') == '1':
    # CPU processes need a cross-process collectives backend; GPUs and TPUs ignore this.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if env.get('JAX_COORDINATOR_ADDRESS') and env.get('JAX_NUM_PROCESSES'):
    jax.distributed.initialize(
        coordinator_address=env['JAX_COORDINATOR_ADDRESS'],
        num_processes=int(env['JAX_NUM_PROCESSES']),
        process_id=int(env.get('JAX_PROCESS_ID', '0')))
  elif env.get('AE_DISTRIBUTED') == '1':
    jax.distributed.initialize()


def log_devices():
  logging.info('JAX %s, backend %s: %d devices (%d local) in %d process(es), this is process %d: %s',
               jax.__version__, jax.default_backend(), jax.device_count(), jax.local_device_count(),
               jax.process_count(), jax.process_index(), jax.devices())


@contextlib.contextmanager
def _on_stop_signals(handler):
  """Within: SIGTERM and SIGINT call handler(signal name); after: the handlers of before. Off the
  main thread (where Python allows no handler) signals are left alone."""
  old = {}
  for s in (signal.SIGTERM, signal.SIGINT):
    try:
      old[s] = signal.signal(s, lambda signum, frame: handler(signal.Signals(signum).name))
    except ValueError:
      pass
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)


class StopRequest:
  """Turns SIGTERM/SIGINT into a flag the training loop checks between calls (preemption), so
  that it can save the current step before it exits."""

  def __init__(self):
    self.signal = None
    self._handling = _on_stop_signals(self._note)

  def _note(self, name):
    self.signal = name

  def __enter__(self):
    self._handling.__enter__()
    return self

  def __exit__(self, *exc):
    return self._handling.__exit__(*exc)


def stop_at_once():
  """Within: SIGTERM/SIGINT raise Preempted where the main thread is (for the evaluation, which
  has nothing to save), so that the run ends as cleanly as a preempted training."""
  def stop(name):
    raise Preempted(name)
  return _on_stop_signals(stop)


def compile_ahead(jitted, *args):
  """Starts compiling jitted for these arguments (arrays or ShapeDtypeStructs with shardings) in
  a thread and returns it: a later call with arguments of the same shapes, dtypes and shardings
  finds the executable compiled. XLA compiles without the GIL, so several can run side by side.
  A failure here is left to the real call, which raises it again with its context."""
  def work():
    try:
      jitted.lower(*args).compile()
    except Exception as e:  # noqa: BLE001
      logging.debug('compiling ahead failed: %r', e)
  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  return thread
