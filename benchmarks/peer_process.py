"""Timing a peer implementation in a Python process of its own, one window at a time.

The benchmarks compare our code with other frameworks side by side, alternating timed windows so
that the machine's drifting speed hits every implementation alike. Inside our process a peer would
run under our runtime settings (the one-arena malloc setting ours trains with, ae/cpu/host_memory.py,
made PyTorch 10% slower on one machine) and beside the other frameworks' thread pools (scikit-learn's
Euclidean and Manhattan searches ran half as fast beside ours); in a process of its own it runs as
its users run it. Standard library only, so that a peer's process loads nothing of ours but this.
"""

import json
import subprocess
import sys
import time

_READY, _WINDOW_S = 'peer_ready', 'peer_window_s'


class PeerProcess:
  """A peer in a Python process of its own (why: the module docstring), timed one window at a time
  so that its windows alternate with ours. The process runs `python ARGS` and must call
  serve_windows; its stderr is this process's. .about is what the peer says of itself (its
  framework's version, the device it computes on; a search, how many of its answers it checked
  right)."""

  def __init__(self, name, args, env=None):
    self.name = name
    self._proc = subprocess.Popen([sys.executable] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
    self.about = json.loads(self._answer(_READY))  # built and warmed up

  def _answer(self, key):
    for line in self._proc.stdout:
      if line.startswith(key):
        return line[len(key):].strip()
      sys.stderr.write(line)  # whatever else the peer prints
    raise RuntimeError(f'the {self.name} peer exited with status {self._proc.wait()} before '
                       'answering (its error is above; the peers need the packages in '
                       'benchmarks/requirements.txt: pip install -r benchmarks/requirements.txt)')

  def window(self):
    """Seconds of one window, timed in the peer's process."""
    self._proc.stdin.write('window\n')
    self._proc.stdin.flush()
    return float(self._answer(_WINDOW_S))

  def close(self):
    self._proc.stdin.close()
    self._proc.wait(timeout=120)


def serve_windows(window, about):
  """A peer process's side of PeerProcess: says it is ready (with `about`, a JSON-able dict that
  describes the peer), then times window() once per line on stdin and answers on stdout with the
  seconds, until stdin ends. (It times with perf_counter itself: benchmarks.common.time_call
  would load JAX into the peer's process.)"""
  print(_READY, json.dumps(about), flush=True)
  for _ in sys.stdin:
    start = time.perf_counter()
    window()
    print(f'{_WINDOW_S} {time.perf_counter() - start!r}', flush=True)
