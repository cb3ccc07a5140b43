"""The test codes as an embedding for TensorBoard's Projector, with class names and image sprite.

So that `tensorboard --logdir runs` opens the latent space interactively beside the training
curves: PCA, UMAP and t-SNE views, coloured by class, each point shown as its image, and the
nearest neighbours of any image. Written as the plain files the Projector reads
(projector_config.pbtxt and what it points to): no TensorFlow or TensorBoard needed to write them.
"""

import io
import os

import numpy as np
from PIL import Image

from ae.workdir import write_whole

SPRITE_SIDE = 8192  # the largest sprite, in pixels per side, that TensorBoard's Projector shows
TENSOR_NAME = 'test_codes'
_DIR = 'projector'  # the files' folder, inside the TensorBoard directory


def sprite(images_u8):
  """The images in one square grid, row by row, [S * H, S * W, C] (S = ceil(sqrt(N)))."""
  n, h, w, c = images_u8.shape
  side = int(np.ceil(np.sqrt(n)))
  padded = np.zeros((side * side, h, w, c), np.uint8)
  padded[:n] = images_u8
  return padded.reshape(side, side, h, w, c).transpose(0, 2, 1, 3, 4).reshape(side * h, side * w, c)


def export(tb_dir, z_NxD, labels, class_names, images_u8):
  """Writes the embedding of the codes z (the first that a sprite holds) into tb_dir, the run's
  TensorBoard directory; returns the number of points."""
  h, w = images_u8.shape[1:3]
  n = min(len(z_NxD), (SPRITE_SIDE // max(h, w)) ** 2)
  os.makedirs(os.path.join(tb_dir, _DIR), exist_ok=True)
  codes = '\n'.join('\t'.join(f'{v:.9g}' for v in row) for row in np.asarray(z_NxD[:n], np.float64))
  _write(tb_dir, 'codes.tsv', (codes + '\n').encode())
  rows = (f'{i}\t{class_names[label]}' for i, label in enumerate(np.asarray(labels[:n])))
  _write(tb_dir, 'metadata.tsv', ('test_index\tclass\n' + '\n'.join(rows) + '\n').encode())
  _write(tb_dir, 'sprite.png', _png(sprite(images_u8[:n])))
  config = (f'embeddings {{\n  tensor_name: "{TENSOR_NAME}"\n'
            f'  tensor_path: "{_DIR}/codes.tsv"\n'
            f'  tensor_shape: {n}\n  tensor_shape: {z_NxD.shape[1]}\n'
            f'  metadata_path: "{_DIR}/metadata.tsv"\n'
            f'  sprite {{\n    image_path: "{_DIR}/sprite.png"\n'
            f'    single_image_dim: {w}\n    single_image_dim: {h}\n  }}\n}}\n')
  _write(tb_dir, 'projector_config.pbtxt', config.encode(), folder='')
  return n


def _png(image_u8):
  buffer = io.BytesIO()
  Image.fromarray(image_u8).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def _write(tb_dir, name, data, folder=_DIR):
  write_whole(os.path.join(tb_dir, folder, name), data)
