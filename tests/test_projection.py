"""The UMAP projection on our exact neighbour graph, as an evaluator and as a figure."""

import types

import numpy as np
from PIL import Image

from eval import plots, projection
from eval.projection import exact_knn_graph, umap_projection
from conftest import tiny_config


def _two_clusters(n=120, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  z = rng.normal(size=(n, 10)).astype(np.float32) + 12.0 * labels[:, None]
  return z, labels


def test_knn_graph_starts_with_self_and_matches_numpy():
  z, _ = _two_clusters(40)
  idx, dist = exact_knn_graph(z, 5)
  d = np.sqrt(((z[:, None].astype(np.float64) - z[None]) ** 2).sum(-1))
  np.testing.assert_array_equal(idx[:, 0], np.arange(40))
  np.testing.assert_array_equal(dist[:, 0], 0.0)
  np.testing.assert_array_equal(idx[:, 1:], np.argsort(d, axis=1, kind='stable')[:, 1:5])
  np.testing.assert_allclose(dist[:, 1:], np.sort(d, axis=1)[:, 1:5], rtol=1e-5)


def test_projection_keeps_separated_clusters_apart_and_is_seeded():
  z, labels = _two_clusters()
  xy, lab = umap_projection(z, labels, 100, seed=0)
  assert xy.shape == (100, 2) and np.all(np.isfinite(xy))
  d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  assert np.mean(lab[np.argmin(d, axis=1)] == lab) > 0.95  # 2-D neighbours share the cluster
  xy2, lab2 = umap_projection(z, labels, 100, seed=0)
  np.testing.assert_array_equal(lab, lab2)
  np.testing.assert_allclose(xy, xy2)


def test_the_evaluator_projects_umap_points_codes_and_the_figure_shows_them(tmp_path):
  """(The end-to-end run skips UMAP for time; this is the part it leaves out.)"""
  z, labels = _two_clusters(80)
  config = tiny_config(eval__umap_points=50)
  inputs = types.SimpleNamespace(config=config, test={'z': z},
                                 ds=types.SimpleNamespace(test_labels=labels))
  numbers, arrays = projection.evaluate(inputs)
  xy, lab = arrays['umap']
  assert numbers == {} and xy.shape == (50, 2) and set(lab) == {0, 1}
  path = plots.save_umap(xy, lab, ['near', 'far'], str(tmp_path / 'umap.png'))
  with Image.open(path) as im:
    assert im.format == 'PNG' and im.size[0] >= 300 and np.asarray(im.convert('L')).std() > 5
  config.eval.umap_points = 0
  assert projection.evaluate(inputs) == ({}, {})
