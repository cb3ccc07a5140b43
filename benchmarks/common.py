"""Helpers shared by the benchmarks: JSON lines, timing windows, the machine's matmul peak."""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp


def emit(**fields):
  print(json.dumps(fields), flush=True)


def log(msg):
  print(msg, file=sys.stderr, flush=True)


def time_call(fn, repeats):
  """Median wall seconds of fn() over repeats calls (fn must block until its work is done)."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def matmul_peak_flops(n=2048, repeats=5):
  """Measured fp32 matmul FLOP/s of the default JAX device (an n x n by n x n product)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n ** 3 / time_call(lambda: f(a).block_until_ready(), repeats)
