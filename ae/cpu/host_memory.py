"""Host memory: let XLA:CPU reuse its freed temporaries from one train step to the next.

XLA:CPU allocates a compiled program's temporaries as one block per call, from a worker thread
(about 100 MB for the default train step). glibc serves a block that large with a fresh mmap
(always, from a thread's own arena: those grow by at most 64 MB) and unmaps it when the call ends,
so every step would fault in all of its pages again. With one arena for all threads
(use_one_arena, at start-up) and, while training (reuse_freed_memory), no mmap for large blocks and
no trimming of the heap's free top, the block is reused from call to call.

Only the training loop runs so: the evaluation's large NumPy arrays would otherwise stay in the
heap. Settings in the environment (any of USER_SETTINGS) and C libraries other than glibc are left
alone. benchmarks/RESULTS.md has the page faults and speeds measured.
"""

import contextlib
import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8
# Any of these in the environment means the user tunes glibc's allocator: leave it alone.
USER_SETTINGS = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
                 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_', 'GLIBC_TUNABLES')
# After training: glibc's default number of mmapped blocks, and the thresholds its dynamic rule
# reaches once a large block has been freed (a setting through mallopt turns that rule off).
_AFTER_TRAINING = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20),
                   (_M_MMAP_MAX, 65536))
_WHILE_TRAINING = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1))

one_arena = False  # whether use_one_arena has set one arena for all threads of this process


def tuned_by_user(environ=None):
  """Whether the environment (default: this process's) tunes glibc's allocator (USER_SETTINGS),
  in which case this module changes nothing."""
  environ = os.environ if environ is None else environ
  return any(name in environ for name in USER_SETTINGS)


def _libc():
  if tuned_by_user():
    return None
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  libc = ctypes.CDLL(None)
  if not hasattr(libc, 'mallopt'):
    return None
  libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
  return libc


def use_one_arena():
  """Makes every thread allocate from glibc's main arena, which can grow past 64 MB without
  mmap; True if set. Must run before any other thread allocates (a thread keeps the arena it
  took first): main.py and the benchmarks call it first (runtime.set_runtime_defaults)."""
  global one_arena
  libc = _libc()
  one_arena = bool(libc) and libc.mallopt(_M_ARENA_MAX, 1) == 1
  return one_arena


@contextlib.contextmanager
def reuse_freed_memory():
  """Within: freed blocks stay in the heap for the next call (after use_one_arena; otherwise
  nothing changes). After: glibc's thresholds again, and the heap's free memory returned."""
  libc = _libc() if one_arena else None
  if libc is None:
    yield
    return
  for param, value in _WHILE_TRAINING:
    libc.mallopt(param, value)
  try:
    yield
  finally:
    for param, value in _AFTER_TRAINING:
      libc.mallopt(param, value)
    libc.malloc_trim(0)
