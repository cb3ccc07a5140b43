"""Exact top-10 of 10,000 queries over a 60,000-item gallery of 10-D codes, per metric.

    python -m benchmarks.query_speed [--peers]

Ours is eval.neighbors.nearest_neighbors; it is first checked against a NumPy brute force on a
sample of queries. Peers (--peers; faiss-cpu needs benchmarks/requirements.txt): faiss-cpu
IndexFlat (L2, L1, inner product on normalised vectors) and scikit-learn
NearestNeighbors(algorithm='brute'), each in a Python process of its own per metric
(benchmarks/query_peers.py, in peer_process.PeerProcess: as its users run it, without the one-arena
malloc setting of our process), checked the same way and timed alternately with ours. Each impl's
number is the median of its runs.
"""

import os
import statistics

from absl import app, flags

from ae import runtime
from benchmarks import common
from benchmarks.peer_process import PeerProcess
from benchmarks.query_peers import PEERS, make_codes, same_as_brute_force
from eval.neighbors import METRICS, nearest_neighbors

FLAGS = flags.FLAGS
flags.DEFINE_integer('num_queries', 10000, 'queries')
flags.DEFINE_integer('num_gallery', 60000, 'gallery items')
flags.DEFINE_integer('dim', 10, 'code dimension')
flags.DEFINE_integer('k', 10, 'neighbours')
flags.DEFINE_integer('repeats', 3, 'timed runs per impl and metric (median)')
flags.DEFINE_bool('peers', False, 'also time faiss-cpu and scikit-learn')
flags.DEFINE_integer('query_chunk', 2048, 'queries per tile')
flags.DEFINE_integer('gallery_chunk', 16384, 'gallery items per tile')
flags.DEFINE_integer('candidate_floats', 2 ** 24,
                     'most floats the second pass gathers per query chunk (caps query_chunk)')


def main(argv):
  del argv
  peer_env = dict(os.environ)  # the peers get the environment as it came, not our defaults
  runtime.set_runtime_defaults()  # as main.py: before JAX starts its backends
  common.emit_machine()
  sizes = {'num_queries': FLAGS.num_queries, 'num_gallery': FLAGS.num_gallery, 'dim': FLAGS.dim}
  q, g, sample = make_codes(**sizes)
  k = FLAGS.k
  tiles = {'query_chunk': FLAGS.query_chunk, 'gallery_chunk': FLAGS.gallery_chunk,
           'candidate_floats': FLAGS.candidate_floats}

  def ours(metric):
    return nearest_neighbors(q, g, k, metric, **tiles)[1]

  for metric in METRICS:
    same = same_as_brute_force(ours(metric), q, g, sample, metric)  # also compiles ours
    if same < 0.999:
      raise SystemExit(f'{metric}: our neighbours differ from the brute force ({same:.4f})')
    timers = {'ours': lambda metric=metric: common.time_call(lambda: ours(metric), 1)}
    peers = {}
    try:
      for name in PEERS if FLAGS.peers else ():
        common.log(f'starting the {name} peer for {metric} in a process of its own')
        peers[name] = PeerProcess(
            name, ['-m', 'benchmarks.query_peers', name, f'--metric={metric}', f'--k={k}'] +
            [f'--{flag}={value}' for flag, value in sizes.items()], env=peer_env)
        timers[name] = peers[name].window
      times = {name: [] for name in timers}
      for _ in range(FLAGS.repeats):  # alternate so that machine noise hits every impl alike
        for name, timer in timers.items():
          times[name].append(timer())
    finally:
      for peer in peers.values():
        peer.close()
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    for name in timers:
      line = {'bench': 'query', 'impl': name, 'metric': metric, 'ms': round(ms[name], 1),
              'queries': FLAGS.num_queries, 'gallery': FLAGS.num_gallery, 'dim': FLAGS.dim, 'k': k}
      if name == 'ours':
        line.update(same_neighbours_as_brute_force=same, **tiles)
      else:
        line.update(common.own_process_fields(peers[name].about, peer_env))
      common.emit(**line)
    if FLAGS.peers:
      common.emit(bench='query_ratio', metric=metric,
                  **{f'ours_speedup_over_{n}': round(ms[n] / ms['ours'], 3) for n in ms if n != 'ours'})


if __name__ == '__main__':
  app.run(main)
