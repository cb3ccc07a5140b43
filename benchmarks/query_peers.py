"""faiss-cpu's IndexFlat and scikit-learn's brute-force NearestNeighbors: the peers of
benchmarks.query_speed --peers, and the codes and NumPy brute force that every side checks with.

    python -m benchmarks.query_peers faiss|sklearn --metric=euclidean|manhattan|cosine
        [--num_queries=10000] [--num_gallery=60000] [--dim=10] [--k=10]

query_speed starts one such process per peer and metric (peer_process.PeerProcess). Each makes the
same codes as query_speed (make_codes), searches once, checks its neighbours against the brute
force on the same sample of queries and says how many agree, with its library's version, then
times one search per request. faiss needs benchmarks/requirements.txt; imports no JAX.
"""

import argparse

import numpy as np

from benchmarks.peer_process import serve_windows

METRICS = ('euclidean', 'manhattan', 'cosine')


def make_codes(num_queries, num_gallery, dim):
  """The benchmark's codes, the same in every process: (queries, gallery, the rows of the queries
  whose neighbours are checked against the brute force)."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(num_queries, dim)).astype(np.float32)
  g = rng.normal(size=(num_gallery, dim)).astype(np.float32)
  return q, g, rng.choice(num_queries, min(200, num_queries), replace=False)


def brute_force_indices(q, g, k, metric):
  if metric == 'euclidean':
    d = ((q[:, None] - g[None]) ** 2).sum(-1)
  elif metric == 'manhattan':
    d = np.abs(q[:, None] - g[None]).sum(-1)
  else:
    d = -(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
  return np.argsort(d, axis=1, kind='stable')[:, :k]


def same_as_brute_force(indices, q, g, sample, metric):
  """The fraction of the sample's neighbours (indices[sample]) that the brute force agrees with."""
  k = indices.shape[1]
  return float(np.mean(indices[sample] == brute_force_indices(q[sample], g, k, metric)))


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


def _faiss_about():
  import faiss
  return {'framework': f'faiss {faiss.__version__}', 'backend': 'cpu',
          'threads': faiss.omp_get_max_threads()}


def _sklearn_about():
  import sklearn
  return {'framework': f'scikit-learn {sklearn.__version__}', 'backend': 'cpu'}


PEERS = {'faiss': (faiss_search, _faiss_about), 'sklearn': (sklearn_search, _sklearn_about)}


def peer(name, metric, num_queries, num_gallery, dim, k):
  """(window, about) of one peer's search: about names its library and says how many of its
  neighbours the brute force agrees with (as query_speed's line for ours does)."""
  search, about = PEERS[name]
  q, g, sample = make_codes(num_queries, num_gallery, dim)
  same = same_as_brute_force(search(q, g, k, metric), q, g, sample, metric)  # also the warm-up
  return (lambda: search(q, g, k, metric)), dict(about(), same_neighbours_as_brute_force=same)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('peer', choices=sorted(PEERS))
  parser.add_argument('--metric', choices=METRICS, required=True)
  parser.add_argument('--num_queries', type=int, default=10000)
  parser.add_argument('--num_gallery', type=int, default=60000)
  parser.add_argument('--dim', type=int, default=10)
  parser.add_argument('--k', type=int, default=10)
  args = parser.parse_args()
  serve_windows(*peer(args.peer, args.metric, args.num_queries, args.num_gallery, args.dim,
                      args.k))


if __name__ == '__main__':
  main()
