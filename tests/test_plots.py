"""Image grids are one mosaic image: every cell's pixels where its corner says, white between."""

import numpy as np
from PIL import Image

from eval import plots


def test_mosaic_pastes_each_image_at_its_corner_on_white():
  rng = np.random.default_rng(0)
  u8 = rng.integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)  # 2 rows x 3 cols of 4x5 images
  rows = [[u8[0, 0], u8[0, 1] / 255.0, u8[0, 2]], [u8[1, 0], u8[1, 1], u8[1, 2] * 0 + 300.0]]
  image, corners = plots.mosaic(rows, gap=2, row_gap=3, group=2, group_gap=7, top=6)
  # columns: 0, 5 + 2, then the group gap before the third: 2 * (5 + 2) + 7
  assert [c for _, c in corners[0]] == [0, 7, 21] and [r for r, _ in corners[1]] == [13] * 3
  assert image.shape == (13 + 4, 21 + 5, 3) and image.dtype == np.float32
  expected = np.ones_like(image)
  for r in range(2):
    for c in range(3):
      y, x = corners[r][c]
      expected[y:y + 4, x:x + 5] = u8[r, c] / 255.0
  expected[13:17, 21:26] = 1.0  # a float image above 1 is clipped
  np.testing.assert_allclose(image, expected, atol=1e-7)


def test_query_grid_is_one_png_with_the_images_in_it(tmp_path):
  rng = np.random.default_rng(1)
  gallery = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 50)
  idx = rng.integers(0, 50, (3, 4))
  dist = np.sort(rng.random((3, 4)), axis=1)
  path = plots.save_query_grid(gallery[:3], labels[:3], gallery, labels, idx, dist,
                               [f'class{i}' for i in range(10)], str(tmp_path / 'q.png'), 'title')
  with Image.open(path) as im:
    assert im.format == 'PNG' and im.size[0] >= 300
    colours = len(np.unique(np.asarray(im.convert('RGB')).reshape(-1, 3), axis=0))
  assert colours > 1000  # the random images are drawn, not only text and white
