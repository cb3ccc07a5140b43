"""Images/s of the real train step of the default model, optionally beside Keras/TF and PyTorch.

    python -m benchmarks.train_speed [--batch_size=128] [--peers]

Ours: the jitted step of ae.train (batch gathered on device, noise std 0.1 drawn and clipped in the
step, Adam update included). Peers (--peers, needs benchmarks/requirements.txt): the same
architecture, loss, optimizer, noise and batch in Keras 3 on TensorFlow and in PyTorch, each in a
Python process of its own (benchmarks/train_peers.py, in peer_process.PeerProcess: as its users run
it, without the one-arena malloc setting ours trains with and beside no other framework), timed in
windows that alternate with ours. Each impl's number is the median of its windows; the ratio line
gives ours / peer and, since the machine's speed drifts, the spread of that ratio over the rounds
(min, median, max of the ratios within each round).
"""

import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import Mesh

from ae import parallel, runtime
from ae.cpu import host_memory
from benchmarks import common
from benchmarks.peer_process import PeerProcess
from benchmarks.train_peers import PEERS

FLAGS = flags.FLAGS
common.define_step_flags()
flags.DEFINE_bool('peers', False, 'also time Keras/TF and PyTorch, alternating with ours')
flags.DEFINE_integer('windows', 5, 'timed windows per implementation')
flags.DEFINE_integer('steps', 10, 'train steps per window')
flags.DEFINE_integer('steps_per_jit', 1, 'steps per jitted call (lax.scan)')


def ours(batch_size, num_images, noise_std, steps, steps_per_jit, conv_impl):
  """Returns (run_window, flops_per_image)."""
  config, fn, state, images, idx = common.build_step(batch_size, num_images, noise_std,
                                                     steps_per_jit, conv_impl)
  box = {'state': state}

  def window():
    s = box['state']
    for i in range(steps // steps_per_jit):
      s, m = fn(s, images, idx[i % len(idx)])
    m['loss'].block_until_ready()
    box['state'] = s

  window()  # compile and warm up
  return window, step_flops_per_image(config, noise_std)


def step_flops_per_image(config, noise_std):
  """FLOPs of one train step per image, as XLA counts them in the step lowered for one CPU device.

  That is the program as written, before a backend's rewrites: a GPU backend hands the matmuls to
  cuBLAS calls that its compiled program's count leaves out (2.1 instead of ~84 MFLOP per image on
  an H200), and it has no count for the lowered program. XLA counts a loop body once, whatever its
  trip count: one step without the loop, on abstract inputs (nothing is computed or compiled).
  """
  from ae import train  # pylint: disable=g-import-not-at-top
  from ae.augment import Augmentation  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.array(jax.devices('cpu')[:1]), ('data',))
  init_jit, init_key, apply_fn = train.make_init_fn(config, mesh)
  params, opt_state = jax.eval_shape(init_jit, init_key)
  b, rep = config.train.batch_size, parallel.replicated(mesh)
  sds = lambda shape, dtype, sharding=rep: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  state = train.TrainState(step=sds((), jnp.int32), apply_fn=apply_fn, params=params,
                           tx=train.make_optimizer(config.train, 10 ** 6), opt_state=opt_state)
  lowered = train.make_train_fn(mesh, 0, Augmentation(noise_std=noise_std)).lower(
      state, sds((b, 32, 32, 3), jnp.uint8), sds((1, b), jnp.int32, parallel.data_sharded(mesh, 2, 1)))
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost or 'flops' not in cost:
    common.log('XLA gave no FLOP count for the lowered step: flops_per_image is NaN')
    return float('nan')
  return float(cost['flops']) / b


def main(argv):
  del argv
  b, n, s = FLAGS.batch_size, FLAGS.num_images, FLAGS.steps
  if s < 1 or s % FLAGS.steps_per_jit:
    raise app.UsageError(f'--steps={s} must be a positive multiple of --steps_per_jit='
                         f'{FLAGS.steps_per_jit}: a window runs whole calls, and its images/s '
                         'counts the steps it runs')
  peer_env = dict(os.environ)  # the peers get the environment as it came, not our defaults
  runtime.set_runtime_defaults()  # as main.py: before JAX starts its backends
  common.emit_machine()
  peers = {}
  with host_memory.reuse_freed_memory():  # as in the training loop
    ours_window, flops = ours(b, n, FLAGS.noise_std, s, FLAGS.steps_per_jit, FLAGS.conv_impl)
    timers = {'ours': lambda: common.time_call(ours_window, 1)}
    # Before the peers start: measured after their windows, the peak came out at 74 GFLOP/s on the
    # 2-core machine that gives 117-122 alone (and a fraction of peak too high by that much).
    peak = common.matmul_peak_flops()
    try:
      for name in PEERS if FLAGS.peers else ():
        common.log(f'starting the {name} peer in a process of its own')
        peers[name] = PeerProcess(
            name, ['-m', 'benchmarks.train_peers', name, f'--batch_size={b}', f'--num_images={n}',
                   f'--steps={s}', f'--noise_std={FLAGS.noise_std}'], env=peer_env)
        timers[name] = peers[name].window
      times = {k: [] for k in timers}
      for w in range(FLAGS.windows):  # alternate so that machine noise hits every impl alike
        for name, timer in timers.items():
          times[name].append(timer())
        common.log(f'window {w + 1}/{FLAGS.windows}: ' +
                   ', '.join(f'{k} {b * s / t[-1]:.0f} imgs/s' for k, t in times.items()))
    finally:
      for peer in peers.values():
        peer.close()
  rates = {k: b * s / statistics.median(t) for k, t in times.items()}
  for name, rate in rates.items():
    line = {'bench': 'train_step', 'impl': name, 'batch_size': b, 'imgs_per_s': round(rate, 1),
            'windows': FLAGS.windows, 'steps_per_window': s}
    if name == 'ours':
      line.update(devices=jax.device_count(), backend=jax.default_backend(),
                  flops_per_image=flops, matmul_peak_gflops=round(peak / 1e9, 1),
                  fraction_of_matmul_peak=round(rate * flops / peak, 3),
                  steps_per_jit=FLAGS.steps_per_jit, conv_impl=FLAGS.conv_impl)
    else:
      line.update(common.own_process_fields(peers[name].about, peer_env))
    common.emit(**line)
  if FLAGS.peers:
    common.emit(bench='train_step_ratio', batch_size=b, **common.speed_ratios(times))


if __name__ == '__main__':
  app.run(main)
