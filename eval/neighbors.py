"""Exact k-nearest neighbours in latent space, in bounded memory.

Queries are taken in chunks (split across devices), each searched by one jitted call.

Low-dimensional codes take a two-pass route, a scan over gallery tiles of gallery_chunk rows that
avoids a top-k over every tile, the expensive part on a CPU: pass 1 reduces each distance tile to
the minimum of every block of gallery rows (block_rows(k): 128 for k <= 32, fewer for larger k);
the k blocks with the smallest minima hold every true neighbour (each neighbour's block has a
minimum no larger than the k-th smallest block minimum); pass 2 gathers those k blocks per query,
recomputes their distances and takes the top-k. Both passes compute a distance with the same
unrolled sum over the few dimensions, so they agree to the bit. Pass 1 lays a tile out
gallery-major ([rows, queries]) and takes the block minima by halving (min of the two halves,
log2(block) times): XLA fuses distance and minima into one loop that vectorises along the queries
and never writes the tile to memory (several times faster on a CPU than a matmul tile followed by a
min-reduction). Padding rows are made infinitely far by their coordinates (_gallery_tiles), so that
loop needs no mask. High-dimensional data (raw pixels) take the distances to every gallery row (a
matmul for Euclidean and cosine, a cache-sized scan for Manhattan), then one top-k over the whole
row: XLA's top-k of 1,000 among 50,000 costs little, where merging a running top-1,000 after every
gallery tile (a sort of 2,000 candidates each time) cost more than the distances. The chunk's
distances, query_chunk x gallery rows, are the largest array; query_chunk is lowered to keep them
within _MAX_ROW_FLOATS.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

METRICS = ('euclidean', 'manhattan', 'cosine')
BLOCK = 128  # the most gallery rows per block of the two-pass search
_MIN_BLOCK = 16  # the fewest (for k = 100, 16-row blocks measured slower than 32)
_BLOCK_CANDIDATES = 4096  # pass 2's candidate rows per query (k * block) that set the block size
_MAX_CANDIDATE_FLOATS = 2 ** 24  # default per query chunk in pass 2: k * block * D * queries
_MAX_ROW_FLOATS = 2 ** 26  # per query chunk of the whole-row search: queries * gallery rows
_SUB_ROWS = 128  # gallery rows per accumulator of the many-dimensional Manhattan tile
_DIM_CHUNK = 16  # dimensions per unrolled step there


def _normalize(x):
  """Unit rows; a zero row stays zero, so its cosine distance to anything is exactly 1."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.where(norm > 0, norm, 1.0)


def _prepare_queries(q_QxD, metric, block_layout):
  """Query rows as the search compares them: unit rows for cosine, and in the block layout one
  more coordinate, 1 (see _gallery_tiles)."""
  if metric != 'cosine':
    return q_QxD
  q_QxD = _normalize(q_QxD)
  if block_layout:
    q_QxD = jnp.concatenate([q_QxD, jnp.ones((q_QxD.shape[0], 1), q_QxD.dtype)], axis=1)
  return q_QxD


@functools.partial(jax.jit, static_argnames=('metric', 'tile', 'block_layout'))
def _gallery_tiles(g_GxD, metric, tile, block_layout):
  """The gallery padded to whole tiles, [tiles, tile, D'], built on the device (on a GPU the
  whole query takes milliseconds, so host work and round trips would show): unit rows for cosine.

  Plain layout (the whole-row search): one tile, no padding. Block layout: padding rows
  infinitely far from every query, so that pass 1 needs no mask (a select per distance would
  dominate it): +inf coordinates; for cosine one more coordinate, 0 on gallery rows (adding an
  exact 0 to the 1 of every query) and -inf on padding rows.
  """
  ng, dim = g_GxD.shape
  pad = -ng % tile
  if metric == 'cosine':
    g_GxD = _normalize(g_GxD)
  if not block_layout:
    return g_GxD[None]
  if metric == 'cosine':
    g_GxD = jnp.pad(g_GxD, ((0, pad), (0, 1)))
    g_GxD = g_GxD.at[ng:, dim].set(-jnp.inf)
  else:
    g_GxD = jnp.pad(g_GxD, ((0, pad), (0, 0)), constant_values=jnp.inf)
  return g_GxD.reshape(-1, tile, g_GxD.shape[1])


def distance_tile(q_QxD, g_GxD, metric):
  """Distances between every query and gallery row: [Q, G] (the high-dimensional route)."""
  if metric == 'euclidean':
    d2 = (jnp.sum(q_QxD * q_QxD, -1)[:, None] - 2.0 * (q_QxD @ g_GxD.T)
          + jnp.sum(g_GxD * g_GxD, -1)[None, :])
    return jnp.sqrt(jnp.maximum(d2, 0.0))
  if metric == 'manhattan':
    if q_QxD.shape[1] > 64:
      return _manhattan_many_dims(q_QxD, g_GxD)
    # Unrolled over the few dimensions: one fused elementwise loop over [Q, G] that vectorises
    # along the gallery, faster on a CPU than reducing a [Q, G, D] broadcast.
    g_DxG = g_GxD.T
    return _unrolled_distance([q_QxD[:, j:j + 1] for j in range(q_QxD.shape[1])],
                              [g_DxG[j:j + 1] for j in range(q_QxD.shape[1])], metric)
  if metric == 'cosine':  # rows are normalised once, outside the tile loop
    return 1.0 - q_QxD @ g_GxD.T
  raise ValueError(f'unknown metric {metric!r}; expected one of {METRICS}')


def _manhattan_many_dims(q_QxD, g_GxD):
  """Manhattan distances [Q, G] between rows of many dimensions (raw pixels).

  Per sub-tile of _SUB_ROWS gallery rows, a scan over chunks of _DIM_CHUNK dimensions adds each
  chunk's unrolled sum to a [rows, queries] accumulator: vectorised along the queries, and small
  enough to stay in cache: several times faster on a CPU than reducing a [Q, G, D] broadcast (one
  output at a time, streaming the whole gallery from memory for every query). Zero padding of
  dimensions adds exact zeros; padded gallery rows are cut off.
  """
  (nq, dim), ng = q_QxD.shape, g_GxD.shape[0]
  pad_d, pad_g = -dim % _DIM_CHUNK, -ng % _SUB_ROWS
  q_CxKxQ = jnp.pad(q_QxD, ((0, 0), (0, pad_d))).T.reshape(-1, _DIM_CHUNK, nq)
  g_SxRxD = jnp.pad(g_GxD, ((0, pad_g), (0, pad_d))).reshape(-1, _SUB_ROWS, dim + pad_d)

  def sub_tile(g_RxD):
    g_CxKxR = g_RxD.T.reshape(-1, _DIM_CHUNK, _SUB_ROWS)

    def add_chunk(acc_RxQ, chunk):
      q_KxQ, g_KxR = chunk
      return acc_RxQ + _unrolled_distance(list(g_KxR[:, :, None]), list(q_KxQ[:, None, :]),
                                          'manhattan'), None

    acc_RxQ, _ = jax.lax.scan(add_chunk, jnp.zeros((_SUB_ROWS, nq), jnp.float32),
                              (q_CxKxQ, g_CxKxR))
    return acc_RxQ

  return jax.lax.map(sub_tile, g_SxRxD).reshape(-1, nq)[:ng].T


@functools.partial(jax.jit, static_argnames=('k', 'metric'))
def _chunk_topk(q_QxD, g_1xGxD, k, metric):
  """Top-k over the whole gallery, [1, G, D]: the distances to every row, then one top-k."""
  q_QxD = _prepare_queries(q_QxD, metric, block_layout=False)
  neg, idx = jax.lax.top_k(-distance_tile(q_QxD, g_1xGxD[0], metric), k)  # lower index first
  return -neg, idx.astype(jnp.int32)  # among equal distances


def _unrolled_distance(a_D, b_D, metric):
  """Distance between a and b given as D broadcastable arrays each (one per dimension), as a
  sum unrolled over D.

  Elementwise over the leading axes, so XLA fuses it with what follows; the fixed order of the
  sum makes the two passes of the block search compute identical values. Euclidean is squared.
  """
  if metric == 'euclidean':
    term = lambda x, y: jnp.square(x - y)
  elif metric == 'manhattan':
    term = lambda x, y: jnp.abs(x - y)
  else:  # cosine on normalised rows
    term = lambda x, y: x * y
  d = term(a_D[0], b_D[0])
  for a, b in zip(a_D[1:], b_D[1:]):
    d = d + term(a, b)
  return 1.0 - d if metric == 'cosine' else d


def _halving_min(d_NxBxQ):
  """Minimum over axis 1 (a power of two) as elementwise minima of halves."""
  while d_NxBxQ.shape[1] > 1:
    half = d_NxBxQ.shape[1] // 2
    d_NxBxQ = jnp.minimum(d_NxBxQ[:, :half], d_NxBxQ[:, half:])
  return d_NxBxQ[:, 0]


def block_rows(k):
  """Gallery rows per block of the two-pass search for a top-k: the largest power of two up to
  BLOCK with k * rows <= _BLOCK_CANDIDATES (at least _MIN_BLOCK). Pass 2 re-scores k blocks per
  query, so fewer rows per block for a larger k (the evaluation's P@100 and mAP@100: 32) make
  pass 2 cheaper than pass 1 gets dearer; up to k = 32, 128 rows."""
  rows = BLOCK
  while rows > _MIN_BLOCK and k * rows > _BLOCK_CANDIDATES:
    rows //= 2
  return rows


@functools.partial(jax.jit, static_argnames=('k', 'metric', 'block'))
def _chunk_topk_blocks(q_QxD, g_NxCxD, k, metric, block):
  """The two-pass search (module docstring) over tiles from _gallery_tiles."""
  q_QxD = _prepare_queries(q_QxD, metric, block_layout=True)
  num_tiles, tile, dim = g_NxCxD.shape
  nq = q_QxD.shape[0]
  q_DxQ = q_QxD.T  # each dimension contiguous along the queries, the vectorised axis

  def block_minima(_, g_CxD):
    d_CxQ = _unrolled_distance([g_CxD[:, j:j + 1] for j in range(dim)],
                               [q_DxQ[j:j + 1] for j in range(dim)], metric)
    return None, _halving_min(d_CxQ.reshape(tile // block, block, nq))

  _, mins = jax.lax.scan(block_minima, None, g_NxCxD)  # [tiles, blocks, Q]
  mins = mins.reshape(-1, nq).T
  kb = min(k, mins.shape[1])
  _, blocks = jax.lax.top_k(-mins, kb)
  # In index order, so that top_k's lower-position-first rule breaks ties by the lower index.
  blocks = jnp.sort(blocks, axis=1)
  g_DxBxR = g_NxCxD.reshape(-1, block, dim).transpose(2, 0, 1)  # [D, blocks, rows of a block]
  d = _unrolled_distance(list(g_DxBxR[:, blocks]), list(q_DxQ[:, :, None, None]), metric)
  neg, pos = jax.lax.top_k(-d.reshape(nq, -1), k)
  rows = (blocks[:, :, None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(nq, -1)
  dist = jnp.sqrt(-neg) if metric == 'euclidean' else -neg
  return dist, jnp.take_along_axis(rows, pos, axis=1)


def tile_rows(num_rows, most, multiple=1):
  """Rows per tile (of the gallery, or per chunk of queries): as few tiles as `most` rows each
  allow, of equal size (rounded up to a multiple): 50,000 rows in 4 tiles of 12,500, not 3 of
  16,384 and one of 848 padded to 16,384 (31% more distances to compute; 11-13% of a 10k x 60k
  latent query)."""
  tiles = -(-num_rows // most)
  return -(-num_rows // (tiles * multiple)) * multiple


def _drop_self(d, i, first_index, k):
  """From k + 1 neighbours per query, the first k that are not the query itself (exact: removing
  one row from a ranking moves every other row up by at most one place)."""
  is_self = i == np.arange(first_index, first_index + len(i))[:, None]
  order = np.argsort(is_self, axis=1, kind='stable')[:, :k]  # at most one self per row, last
  return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def nearest_neighbors(queries, gallery, k, metric, exclude_self=False, query_chunk=2048,
                      gallery_chunk=16384, mesh=None, candidate_floats=_MAX_CANDIDATE_FLOATS):
  """Exact k nearest gallery rows for each query row.

  Args:
    queries: [Q, D] array of finite values.
    gallery: [G, D] array of finite values.
    k: neighbours per query (at most G, or G - 1 with exclude_self).
    metric: 'euclidean', 'manhattan' or 'cosine' (1 - cosine similarity; zero vectors give 1).
    exclude_self: queries and gallery are the same set; never return a query's own index.
    query_chunk, gallery_chunk: tile sizes; memory is O(query_chunk * gallery_chunk) for
      low-dimensional codes; the high-dimensional route holds query_chunk x G distances, with
      query_chunk lowered to keep them within _MAX_ROW_FLOATS.
    candidate_floats: in the two-pass search, the most floats pass 2 gathers per query chunk
      (k * block_rows(k) * D per query); it lowers query_chunk where needed.
    mesh: optional device mesh with a 'data' axis; each query chunk is split across it.

  Returns:
    (distances [Q, k] float32 ascending, indices [Q, k] int32); ties go to the lower index.
  """
  q = np.asarray(queries, np.float32)
  g = np.asarray(gallery, np.float32)
  _check_inputs(q, g, k, metric, exclude_self)
  mesh = mesh or Mesh(np.array(jax.devices()[:1]), ('data',))
  k_search = k + int(exclude_self)

  block = block_rows(k_search)
  two_pass = k_search * block * g.shape[1] <= _MAX_CANDIDATE_FLOATS // 64
  if two_pass:
    tile = tile_rows(len(g), gallery_chunk, block)
    query_chunk = max(1, min(query_chunk, candidate_floats // (k_search * block * g.shape[1])))
    search = functools.partial(_chunk_topk_blocks, k=k_search, metric=metric, block=block)
  else:  # the whole gallery in one tile
    tile = len(g)
    query_chunk = max(1, min(query_chunk, _MAX_ROW_FLOATS // len(g)))
    search = functools.partial(_chunk_topk, k=k_search, metric=metric)
  g_tiles = _gallery_tiles(jax.device_put(g, NamedSharding(mesh, P())), metric=metric, tile=tile,
                           block_layout=two_pass)
  qc = tile_rows(len(q), query_chunk, mesh.size)  # equal chunks, a multiple of the devices
  q_sharding = NamedSharding(mesh, P('data'))
  pending = []  # every chunk is dispatched before the first result is fetched
  for start in range(0, len(q), qc):
    rows = q[start:start + qc]
    if len(rows) < qc:
      rows = np.concatenate([rows, np.zeros((qc - len(rows), q.shape[1]), np.float32)])
    pending.append((start, search(jax.device_put(rows, q_sharding), g_tiles)))
  out_d, out_i = [], []
  for start, (d, i) in pending:
    n = min(qc, len(q) - start)
    d, i = np.asarray(d)[:n], np.asarray(i)[:n]
    if exclude_self:
      d, i = _drop_self(d, i, start, k)
    out_d.append(d)
    out_i.append(i)
  return np.concatenate(out_d), np.concatenate(out_i)


def _check_inputs(q, g, k, metric, exclude_self):
  """Raises a ValueError that names what is wrong with nearest_neighbors' arguments."""
  if metric not in METRICS:
    raise ValueError(f'unknown metric {metric!r}; expected one of {METRICS}')
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(f'queries {q.shape} and gallery {g.shape} must be [Q, D] and [G, D]')
  if not (np.isfinite(q).all() and np.isfinite(g).all()):
    raise ValueError('queries and gallery must be finite (found NaN or Inf values)')
  if exclude_self and len(q) != len(g):
    raise ValueError('exclude_self needs queries and gallery to be the same set')
  available = len(g) - int(exclude_self)
  if not 1 <= k <= available:
    raise ValueError(f'k={k} must be between 1 and the {available} available gallery items')
