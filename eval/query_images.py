"""--mode=query: nearest training images of arbitrary image files, under each metric."""

import glob
import json
import os
import sys

import jax
import numpy as np
from absl import logging
from PIL import Image

from ae import checkpoint as ckpt
from ae import parallel
from ae.data import load_dataset
from ae.errors import QueryImageError
from ae.inference import apply_in_batches
from ae.model import create_model
from eval import plots
from eval.codes import make_encode_fn
from eval.neighbors import nearest_neighbors


def expand_queries(patterns):
  """Files named directly, and the sorted matches of glob patterns; unmatched names stay as given."""
  paths = []
  for p in patterns:
    matches = sorted(glob.glob(p)) if glob.has_magic(p) else []
    paths.extend(matches or [p])
  return paths


def load_query_image(path, max_pixels):
  """Reads an image file as 32x32 RGB uint8; returns (image, note about conversions or '')."""
  if os.path.isdir(path):
    raise QueryImageError(f'{path} is a directory, not an image file (pass files or a glob like "{path}/*.png")')
  if not os.path.isfile(path):
    raise QueryImageError(f'{path} does not exist')
  if os.path.getsize(path) == 0:
    raise QueryImageError(f'{path} is empty (0 bytes)')
  try:
    with Image.open(path) as im:
      w, h = im.size
      if w * h > max_pixels:  # checked on the header, before any pixel is decoded
        raise QueryImageError(f'{path} is {w}x{h} = {w * h:,} pixels, over the limit of '
                              f'{max_pixels:,} (eval.max_image_pixels); shrink it first')
      mode = im.mode
      im.load()
      rgb = im.convert('RGB')
  except Image.DecompressionBombError as e:
    raise QueryImageError(f'{path} is over the limit of {max_pixels:,} pixels '
                          f'(eval.max_image_pixels) and was not decoded ({e}); shrink it first') from e
  except QueryImageError:
    raise
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unknown, truncated or bad data
    raise QueryImageError(f'{path} is not a readable PNG/JPEG image ({type(e).__name__}: {e})') from e
  notes = []
  if mode != 'RGB':
    notes.append(f'colour mode {mode} -> RGB')
  if (w, h) != (32, 32):
    notes.append(f'{w}x{h} -> 32x32')
    rgb = rgb.resize((32, 32), Image.Resampling.BICUBIC)
  return np.asarray(rgb, np.uint8), ', '.join(notes)


def gallery_codes(config, workdir, params, mesh, ds, encode_fn):
  """Training-set codes: embeddings.npz of the last evaluation, else encoded now."""
  path = os.path.join(workdir, 'embeddings.npz')
  if os.path.isfile(path):
    with np.load(path) as f:
      if len(f['train_z']) == len(ds.train_images):
        return f['train_z']
  images = parallel.put(ds.train_images, parallel.replicated(mesh))
  return apply_in_batches(mesh, encode_fn, params, images, len(ds.train_images),
                          config.train.eval_batch_size)


def query_main(config, workdir, patterns):
  """Answers every readable query; returns the exit status (1 if any query failed)."""
  if not patterns:
    raise QueryImageError('--mode=query needs at least one --query=PATH (a file or a glob)')
  e = config.eval
  images, names, failed = [], [], []
  for path in expand_queries(patterns):
    try:
      img, note = load_query_image(path, e.max_image_pixels)
    except QueryImageError as err:
      logging.error('query skipped: %s', err)
      print(f'error: {err}', file=sys.stderr)
      failed.append(path)
      continue
    if note:
      logging.info('query %s converted: %s', path, note)
    images.append(img)
    names.append(path)
  if not images:
    return 1
  mesh = parallel.make_mesh()
  params, step = ckpt.load_params(config.model, workdir, mesh)
  ds = load_dataset(config.data, config.seed)
  encode = make_encode_fn(mesh, create_model(config.model, parallel.platform(mesh)))
  z_gallery = gallery_codes(config, workdir, params, mesh, ds, encode)
  z_q = apply_in_batches(mesh, encode, params, parallel.put(np.stack(images), parallel.replicated(mesh)),
                         len(images), config.train.eval_batch_size)
  k = min(e.k, len(z_gallery))
  found = {m: nearest_neighbors(z_q, z_gallery, k, m, query_chunk=e.query_chunk,
                                gallery_chunk=e.gallery_chunk, mesh=mesh) for m in e.metrics}
  out_dir = os.path.join(workdir, 'queries')
  for q, path in enumerate(names):
    for m, (d, i) in found.items():
      print(json.dumps({'query': path, 'metric': m, 'checkpoint_step': step,
                        'indices': i[q].tolist(), 'labels': ds.train_labels[i[q]].tolist(),
                        'classes': [ds.class_names[c] for c in ds.train_labels[i[q]]],
                        'distances': [round(float(x), 6) for x in d[q]]}), flush=True)
    if jax.process_index() == 0:
      stem = os.path.splitext(os.path.basename(path))[0]
      grid = plots.save_query_grid(
          np.stack([images[q]] * len(found)), None, ds.train_images, ds.train_labels,
          np.stack([found[m][1][q] for m in found]), np.stack([found[m][0][q] for m in found]),
          ds.class_names, os.path.join(out_dir, f'{q:03d}_{stem}.png'),
          f'{path}: rows = ' + ', '.join(found))
      logging.info('query %s: grid in %s', path, grid)
  if failed:
    logging.error('%d of %d queries failed: %s', len(failed), len(failed) + len(names), failed)
  return 1 if failed else 0
