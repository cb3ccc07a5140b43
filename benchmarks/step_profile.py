"""Where the train step's time goes: per-op times of the real step from a JAX profiler trace.

    python -m benchmarks.step_profile [--batch_size=128] [--steps=10] [--top=15] [--cores=1]

Traces --steps calls of the default model's jitted step (as benchmarks.train_speed runs it), reads
each compiled op's time from the trace and sums them by the part of the step each op belongs to,
from the op's source location in the compiled program: encoder and decoder, forward and backward,
the loss, the input (batch gather, noise), the optimizer update and the buffer copies XLA inserts.
Prints a total line (wall_ms: a step untraced; traced_wall_ms: a step while traced, which the op
times belong to; ops_ms: their sum), one line per part and one per op of the --top slowest.

Per-op times are XLA:CPU's thunk events: on 2 cores two independent ops can run side by side and
both count, so the parts can sum to more than the wall time. An event can also end before its op's
work does: XLA:CPU's own matrix products and convolutions (opcodes dot and convolution: the
kernel gradients, the encoder's pooled convolutions) can go on running on its thread pool beside
the next ops, whose events then carry their time (in the default step Dense_3's kernel gradient,
1.6 GFLOP and 7-9.5 ms alone, shows 0.1 ms, while the input gradient's product beside it shows
21 ms, 11 ms alone; the encoder's forward pass shows 5 ms): read such neighbours together, and
the parts as a rough split. With --cores=1 (Linux) the process runs on one core, where each op's
event spans its work: each op's own time, and the step's on one core (1.6-2x its time on 2 cores,
measured). On a GPU the trace events that carry an op's name may be host-side launches as well as
kernels, and library calls (cuBLAS) go by their own names: read the lines as a hint there.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
from absl import app, flags

from ae import runtime
from ae.cpu import host_memory
from benchmarks import common

FLAGS = flags.FLAGS
common.define_step_flags()
flags.DEFINE_integer('steps', 10, 'traced train steps')
flags.DEFINE_integer('top', 15, 'slowest ops to list one by one')
flags.DEFINE_integer('cores', 0, 'run on the first N of the cores this process may use (Linux; '
                     '1: per-op times that are each op\'s own, see above); 0: all of them')

_INSTRUCTION = re.compile(r'\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(')


def compiled_ops(hlo_text):
  """{instruction name: (result shape, opcode, source op_name)} of a compiled HLO module."""
  ops = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      source = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = (m.group(2), m.group(3), source.group(1) if source else '')
  return ops


def part_of(shape, opcode, source):
  """The part of the train step an op's source location (its op_name) puts it in."""
  for method, part in (('encode', 'encoder'), ('decode', 'decoder')):
    if f'AutoEncoder.{method}' in source:
      return part + ('_backward' if 'transpose(jvp(' in source else '_forward')
  if any(k in source for k in ('_normal', '_uniform', 'threefry', 'random', 'clip')) or (
      shape.startswith(('u8[', 'u32[')) or source.endswith('/gather')):
    return 'input'
  if 'jvp()' in source:
    return 'loss'
  if opcode == 'copy' and not source:
    return 'buffer_copies'
  return 'optimizer_and_other'


def op_times(trace_dir, names, steps):
  """Mean ms per step of each traced event whose name is a compiled op's."""
  (path,) = glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True)
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  us = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in names:
      us[e['name']] += e.get('dur', 0)
  return {name: t / 1000 / steps for name, t in us.items()}


def use_cores(n):
  """Restricts this process to the first n of the cores it may run on (0: leaves it as it is);
  before JAX starts, so that XLA's thread pools, which size themselves by them, see only those.
  Returns the number of cores the process may use."""
  if n:
    if not hasattr(os, 'sched_setaffinity'):
      raise app.UsageError(f'--cores={n} needs Linux (os.sched_setaffinity); run without it')
    allowed = sorted(os.sched_getaffinity(0))
    if not 0 < n <= len(allowed):
      raise app.UsageError(f'--cores={n}: this process may use {len(allowed)} cores; give 1 to '
                           f'{len(allowed)}, or 0 for all')
    os.sched_setaffinity(0, allowed[:n])
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def main(argv):
  del argv
  cores = use_cores(FLAGS.cores)  # before JAX starts its thread pools
  runtime.set_runtime_defaults()  # as main.py: before JAX starts its backends
  common.emit_machine()
  if jax.default_backend() != 'cpu':
    common.log('not a CPU backend: the per-op times are a hint (see the module docstring)')
  _, fn, state, images, idx = common.build_step(FLAGS.batch_size, FLAGS.num_images,
                                                FLAGS.noise_std, 1, FLAGS.conv_impl)
  ops = compiled_ops(fn.lower(state, images, idx[0]).compile().as_text())

  def run(s, n):
    for i in range(n):
      s, m = fn(s, images, idx[i % len(idx)])
    m['loss'].block_until_ready()
    return s

  with host_memory.reuse_freed_memory():  # as in the training loop
    state = run(state, 3)  # compile and warm up
    t = time.perf_counter()
    state = run(state, FLAGS.steps)
    wall_ms = (time.perf_counter() - t) * 1000 / FLAGS.steps
    with tempfile.TemporaryDirectory() as trace_dir:
      jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
      t = time.perf_counter()
      state = run(state, FLAGS.steps)
      traced_ms = (time.perf_counter() - t) * 1000 / FLAGS.steps
      jax.profiler.stop_trace()
      times = op_times(trace_dir, ops, FLAGS.steps)
  parts = collections.Counter()
  for name, ms in times.items():
    parts[part_of(*ops[name])] += ms
  total = sum(parts.values())
  common.emit(bench='step_profile_total', batch_size=FLAGS.batch_size, wall_ms=round(wall_ms, 2),
              traced_wall_ms=round(traced_ms, 2), ops_ms=round(total, 2), ops_traced=len(times),
              backend=jax.default_backend(),
              cores=cores, conv_impl=FLAGS.conv_impl)
  for part, ms in parts.most_common():
    common.emit(bench='step_profile', part=part, ms=round(ms, 2), share=round(ms / total, 3))
  for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    shape, opcode, source = ops[name]
    common.emit(bench='step_op', op=name, opcode=opcode, part=part_of(shape, opcode, source),
                ms=round(ms, 2), shape=shape, source=source.split('/closed_call/')[-1][-90:])


if __name__ == '__main__':
  app.run(main)
