"""nearest_neighbors against a NumPy brute force, including ties, duplicates and zero vectors."""

import numpy as np
import pytest

from eval.neighbors import nearest_neighbors


def brute_force(q, g, k, metric, exclude_self=False):
  q, g = q.astype(np.float64), g.astype(np.float64)
  if metric == 'euclidean':
    d = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
  elif metric == 'manhattan':
    d = np.abs(q[:, None] - g[None]).sum(-1)
  else:
    nq, ng = np.linalg.norm(q, axis=1), np.linalg.norm(g, axis=1)
    sim = (q @ g.T) / np.where(nq > 0, nq, 1)[:, None] / np.where(ng > 0, ng, 1)[None]
    d = 1 - sim
  if exclude_self:
    d[np.arange(len(q)), np.arange(len(q))] = np.inf
  order = np.lexsort((np.broadcast_to(np.arange(len(g)), d.shape), d), axis=1)[:, :k]
  return np.take_along_axis(d, order, 1), order


def integer_data(seed, nq, ng, dim=4):
  """Small integer coordinates: exact float32 distances and many ties."""
  rng = np.random.default_rng(seed)
  g = rng.integers(-2, 3, (ng, dim)).astype(np.float32)
  g[5] = g[3]  # duplicates
  g[7] = 0.0   # a zero vector
  q = rng.integers(-2, 3, (nq, dim)).astype(np.float32)
  q[0] = 0.0
  q[1] = g[3]
  return q, g


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_matches_brute_force_with_ties_duplicates_zero_vectors_and_ragged_chunks(metric):
  q, g = integer_data(0, 37, 203)
  # gallery 203 is not a multiple of the 48-row tile; k=60 is larger than a tile
  for k in (1, 10, 60):
    d, i = nearest_neighbors(q, g, k, metric, query_chunk=16, gallery_chunk=48)
    rd, ri = brute_force(q, g, k, metric)
    np.testing.assert_allclose(d, rd, atol=1e-5)
    if metric != 'cosine':  # cosine ties of rounded values may order differently
      np.testing.assert_array_equal(i, ri)
    assert np.all(np.diff(d, axis=1) >= 0)


def test_integer_ties_are_broken_by_the_lower_index():
  g = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [2, 0]], np.float32)
  d, i = nearest_neighbors(np.zeros((1, 2), np.float32), g, 4, 'euclidean', gallery_chunk=2)
  np.testing.assert_array_equal(i, [[0, 1, 2, 3]])
  np.testing.assert_allclose(d, [[1, 1, 1, 1]])


def test_cosine_of_a_zero_vector_is_one_not_nan():
  g = np.array([[0, 0], [1, 0]], np.float32)
  d, i = nearest_neighbors(np.zeros((1, 2), np.float32), g, 2, 'cosine')
  np.testing.assert_allclose(d, [[1, 1]])
  d, _ = nearest_neighbors(np.array([[3, 0]], np.float32), g, 2, 'cosine')
  np.testing.assert_allclose(d, [[0, 1]], atol=1e-6)


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_self_exclusion(metric):
  q, _ = integer_data(1, 50, 50)
  q[10] = q[11]  # a duplicate still finds its twin, just not itself
  d, i = nearest_neighbors(q, q, 5, metric, exclude_self=True, query_chunk=16, gallery_chunk=24)
  rd, ri = brute_force(q, q, 5, metric, exclude_self=True)
  assert not np.any(i == np.arange(50)[:, None])
  np.testing.assert_allclose(d, rd, atol=1e-5)
  assert i[10, 0] == 11 and d[10, 0] == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_candidate_budget_splits_queries_into_chunks_and_results_stay_in_order(metric):
  # 5 * 128 * 4 candidate floats per query: a budget of 7 queries' worth gives 7-query chunks
  # (the last one ragged), all dispatched before the first is read back
  q, _ = integer_data(6, 40, 40)
  d, i = nearest_neighbors(q, q, 4, metric, exclude_self=True, candidate_floats=7 * 5 * 128 * 4)
  rd, ri = brute_force(q, q, 4, metric, exclude_self=True)
  np.testing.assert_allclose(d, rd, atol=1e-5)
  if metric != 'cosine':
    np.testing.assert_array_equal(i, ri)


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_random_float_data_gives_exactly_the_brute_force_neighbours(metric):
  rng = np.random.default_rng(2)
  q, g = rng.normal(size=(70, 10)).astype(np.float32), rng.normal(size=(300, 10)).astype(np.float32)
  d, i = nearest_neighbors(q, g, 10, metric, query_chunk=32, gallery_chunk=64)
  rd, ri = brute_force(q, g, 11, metric)
  # no two of each query's 11 nearest within 1e-5 of each other: float32 rounding cannot reorder
  # them, so the exact neighbours are the answer
  assert np.min(np.diff(rd, axis=1)) > 1e-5
  np.testing.assert_array_equal(i, ri[:, :10])
  np.testing.assert_allclose(d, rd[:, :10], rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_clear_errors():
  x = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match='unknown metric'):
    nearest_neighbors(x, x, 1, 'chebyshev')
  with pytest.raises(ValueError, match='k=3'):
    nearest_neighbors(x, x, 3, 'euclidean', exclude_self=True)
  with pytest.raises(ValueError, match='must be'):
    nearest_neighbors(x, np.zeros((3, 4), np.float32), 1, 'euclidean')
  with pytest.raises(ValueError, match='finite'):
    nearest_neighbors(x, np.array([[0, 0], [np.nan, 1]], np.float32), 1, 'euclidean')


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_padding_rows_are_never_returned_even_when_every_real_row_is_far(metric):
  # 130 rows pad to whole blocks (9 of 16 for k = 130); all real rows are far from the query
  # (cosine distance near 2), and k asks for every real row
  rng = np.random.default_rng(4)
  g = (rng.random((130, 3)) + 100).astype(np.float32)
  q = -g[:2] * 1000
  d, i = nearest_neighbors(q, g, 130, metric)
  rd, ri = brute_force(q, g, 130, metric)
  assert np.all(i < 130) and np.all(np.isfinite(d))
  np.testing.assert_allclose(d, rd, rtol=1e-5)


@pytest.mark.parametrize('metric', ['euclidean', 'manhattan', 'cosine'])
def test_high_dimensional_codes_take_the_whole_row_path_and_match(metric, monkeypatch):
  from eval import neighbors
  rng = np.random.default_rng(3)
  q = rng.integers(0, 3, (20, 700)).astype(np.float32)
  g = rng.integers(0, 3, (150, 700)).astype(np.float32)
  g[7] = g[3]
  for k in (12, 150):  # up to the whole gallery
    d, i = nearest_neighbors(q, g, k, metric, query_chunk=8, gallery_chunk=64)
    rd, ri = brute_force(q, g, k, metric)
    np.testing.assert_allclose(d, rd, rtol=1e-5, atol=1e-4)
    if metric != 'cosine':
      np.testing.assert_array_equal(i, ri)
  # distance rows capped at 3 queries x 150 rows: 7 chunks of 3 queries, the last one ragged
  monkeypatch.setattr(neighbors, '_MAX_ROW_FLOATS', 3 * 150)
  chunks = []
  search = neighbors._chunk_topk
  monkeypatch.setattr(neighbors, '_chunk_topk',
                      lambda q_QxD, *a, **kw: chunks.append(len(q_QxD)) or search(q_QxD, *a, **kw))
  np.testing.assert_array_equal(nearest_neighbors(q, g, 12, metric, query_chunk=8)[1], i[:, :12])
  assert chunks == [3] * 7


def test_large_k_on_low_dimensional_codes_takes_the_whole_row_path_and_matches():
  # k * block_rows(k) * D beyond the two-pass budget: the whole-row route with its unrolled
  # Manhattan distances
  from eval import neighbors
  k, dim = 400, 48
  assert k * neighbors.block_rows(k) * dim > neighbors._MAX_CANDIDATE_FLOATS // 64
  rng = np.random.default_rng(5)
  q = rng.integers(-2, 3, (40, dim)).astype(np.float32)
  g = rng.integers(-2, 3, (500, dim)).astype(np.float32)
  for metric in ('manhattan', 'euclidean'):
    d, i = nearest_neighbors(q, g, k, metric, gallery_chunk=128)
    rd, ri = brute_force(q, g, k, metric)
    np.testing.assert_allclose(d, rd, atol=1e-4)
    np.testing.assert_array_equal(i, ri)


def test_many_dimensional_manhattan_tile_against_numpy():
  # sizes that are not multiples of the 16-dimension chunk or the 128-row sub-tile
  from eval.neighbors import distance_tile
  rng = np.random.default_rng(6)
  q = rng.random((9, 301), dtype=np.float32)
  g = rng.random((131, 301), dtype=np.float32)
  ref = np.abs(q[:, None].astype(np.float64) - g[None]).sum(-1)
  np.testing.assert_allclose(np.asarray(distance_tile(q, g, 'manhattan')), ref, rtol=1e-5)


def test_gallery_tiles_are_as_few_and_as_even_as_the_chunk_allows():
  from eval.neighbors import BLOCK, tile_rows
  assert tile_rows(50_000, 16_384) == 12_500  # 4 tiles, none of them mostly padding
  assert tile_rows(60_000, 16_384, BLOCK) == 15_104  # 4 x 118 blocks
  assert tile_rows(16_384, 16_384) == 16_384 and tile_rows(5, 16_384) == 5
  for n, chunk, multiple in ((203, 48, 1), (1000, 7, 1), (60_000, 4_096, 128), (129, 128, 128)):
    tile = tile_rows(n, chunk, multiple)
    tiles = -(-n // tile)
    assert tile % multiple == 0 and tiles == -(-n // max(chunk, multiple))
    assert tiles * tile - n < tiles * multiple  # padding: less than one multiple per tile


def test_block_size_shrinks_for_large_k_and_the_search_stays_exact():
  from eval.neighbors import block_rows
  assert [block_rows(k) for k in (1, 10, 11, 32, 33, 64, 100, 101, 256, 1000)] == [
      128, 128, 128, 128, 64, 64, 32, 32, 16, 16]
  rng = np.random.default_rng(6)
  g = rng.integers(-3, 4, (3000, 10)).astype(np.float32)  # many ties
  q = rng.integers(-3, 4, (50, 10)).astype(np.float32)
  for k in (33, 100):  # blocks of 64 and 32
    for metric in ('euclidean', 'manhattan'):
      d, i = nearest_neighbors(q, g, k, metric, gallery_chunk=1000)
      rd, ri = brute_force(q, g, k, metric)
      np.testing.assert_allclose(d, rd, atol=1e-5)
      np.testing.assert_array_equal(i, ri)
