"""Exact top-10 of 10,000 queries over a 60,000-item gallery of 10-D codes, per metric.

    python -m benchmarks.query_speed [--peers]

Ours is eval.neighbors.nearest_neighbors; it is first checked against a NumPy brute force on a
sample of queries. Peers (--peers): faiss-cpu IndexFlat (L2, L1, inner product on normalised
vectors) and scikit-learn NearestNeighbors(algorithm='brute'), timed alternately with ours.
"""

import statistics

import numpy as np
from absl import app, flags

from ae import parallel
from benchmarks import common
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


def brute_force_indices(q, g, k, metric):
  if metric == 'euclidean':
    d = ((q[:, None] - g[None]) ** 2).sum(-1)
  elif metric == 'manhattan':
    d = np.abs(q[:, None] - g[None]).sum(-1)
  else:
    d = -(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
  return np.argsort(d, axis=1, kind='stable')[:, :k]


def faiss_search(q, g, k, metric):
  import faiss
  if metric == 'euclidean':
    index = faiss.IndexFlatL2(g.shape[1])
  elif metric == 'manhattan':
    index = faiss.IndexFlat(g.shape[1], faiss.METRIC_L1)
  else:
    index = faiss.IndexFlatIP(g.shape[1])
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
  index.add(g)
  return index.search(q, k)[1]


def sklearn_search(q, g, k, metric):
  from sklearn.neighbors import NearestNeighbors
  nn = NearestNeighbors(n_neighbors=k, algorithm='brute', metric=metric).fit(g)
  return nn.kneighbors(q, return_distance=False)


def main(argv):
  del argv
  parallel.set_runtime_defaults()  # as main.py: before JAX starts its backends
  common.emit_machine()
  rng = np.random.default_rng(0)
  q = rng.normal(size=(FLAGS.num_queries, FLAGS.dim)).astype(np.float32)
  g = rng.normal(size=(FLAGS.num_gallery, FLAGS.dim)).astype(np.float32)
  k = FLAGS.k

  def ours(metric):
    return nearest_neighbors(q, g, k, metric, query_chunk=FLAGS.query_chunk,
                             gallery_chunk=FLAGS.gallery_chunk,
                             candidate_floats=FLAGS.candidate_floats)[1]

  impls = {'ours': ours}
  if FLAGS.peers:
    impls['faiss'] = lambda m: faiss_search(q, g, k, m)
    impls['sklearn'] = lambda m: sklearn_search(q, g, k, m)
  sample = rng.choice(FLAGS.num_queries, 200, replace=False)
  for metric in METRICS:
    results = {name: fn(metric) for name, fn in impls.items()}  # warm-up (compiles ours)
    ref = brute_force_indices(q[sample], g, k, metric)
    same = {name: float(np.mean(r[sample] == ref)) for name, r in results.items()}
    if same['ours'] < 0.999:
      raise SystemExit(f'{metric}: our neighbours differ from the brute force ({same["ours"]:.4f})')
    times = {name: [] for name in impls}
    for _ in range(FLAGS.repeats):
      for name, fn in impls.items():
        times[name].append(common.time_call(lambda fn=fn: fn(metric), 1))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    tiles = {'query_chunk': FLAGS.query_chunk, 'gallery_chunk': FLAGS.gallery_chunk,
             'candidate_floats': FLAGS.candidate_floats}
    for name in impls:
      common.emit(bench='query', impl=name, metric=metric, ms=round(ms[name], 1),
                  queries=FLAGS.num_queries, gallery=FLAGS.num_gallery, dim=FLAGS.dim, k=k,
                  same_neighbours_as_brute_force=same[name], **(tiles if name == 'ours' else {}))
    if FLAGS.peers:
      common.emit(bench='query_ratio', metric=metric,
                  **{f'ours_speedup_over_{n}': round(ms[n] / ms['ours'], 3) for n in ms if n != 'ours'})


if __name__ == '__main__':
  app.run(main)
