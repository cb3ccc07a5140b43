"""Host memory: keep the memory XLA:CPU frees inside the process instead of unmapping it per call.

XLA:CPU allocates a compiled program's temporaries as one block per call, from a worker thread:
108 MB for the default model's train step at batch 128. glibc serves a block that large with a
fresh mmap (always, from a thread's own arena: those grow by at most 64 MB) and returns it with
munmap when the call ends, so every step touches 108 MB of new pages: measured on 2 cores,
26,400 page faults and ~0.1 s of kernel time a step, a step of 215 ms. With one arena for all
threads, no mmap for large blocks and no trimming of the heap's free top, the block is reused
from one call to the next: no page faults, 175-185 ms a step.

The cost: the process keeps the largest heap it has needed until it ends, and its threads share
one arena's lock (XLA allocates per op, not per element; no slowdown measured).
"""

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1))
# Any of these in the environment means the user tunes glibc's allocator: leave it alone.
USER_SETTINGS = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
                 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_', 'GLIBC_TUNABLES')
kept = False  # whether keep_freed_memory has set SETTINGS in this process


def keep_freed_memory():
  """Sets SETTINGS through glibc's mallopt; True if set. Does nothing where the C library is not
  glibc or the environment has any of USER_SETTINGS. Call it before JAX starts its backends: a
  thread that allocated before keeps its own arena."""
  if any(name in os.environ for name in USER_SETTINGS):
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)
  if mallopt is None:
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  global kept
  kept = all([mallopt(param, value) == 1 for param, value in SETTINGS])
  return kept
