"""The same run on 1 and on 4 (fake CPU) devices gives the same losses and parameters."""

import json
import os

import numpy as np

from conftest import run_python, tiny_config

SCRIPT = '''
import sys
import jax
jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
import test_parallel
test_parallel.train_and_save(sys.argv[2])
'''


def train_and_save(workdir):
  """Trains configs/test.py at batch 16 into workdir; saves its parameters and a summary there."""
  import jax  # pylint: disable=g-import-not-at-top
  from ae import train  # pylint: disable=g-import-not-at-top
  from ae.metrics_log import read_records  # pylint: disable=g-import-not-at-top
  state, mesh, _ = train.train(tiny_config(train__log_every_steps=1, train__batch_size=16), workdir)
  records = read_records(os.path.join(workdir, 'metrics.jsonl'))
  params = [np.asarray(x) for x in jax.tree.leaves(state.params)]
  np.savez(os.path.join(workdir, 'params.npz'), *params)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'devices': jax.device_count(), 'mesh': mesh.size,
               'losses': [r['train/loss'] for r in records if 'train/loss' in r],
               'test': [r['test/mse'] for r in records if 'test/mse' in r]}, f)


def _summary(workdir):
  with open(workdir / 'summary.json') as f:
    return json.load(f)


def test_four_devices_match_one_device(tmp_path):
  proc = run_python(['-c', SCRIPT, '4', str(tmp_path / 'four')])
  assert proc.returncode == 0, proc.stderr[-3000:]
  train_and_save(str(tmp_path / 'one'))  # here: this process has one CPU device
  one, four = _summary(tmp_path / 'one'), _summary(tmp_path / 'four')
  assert one['devices'] == 1 and four['devices'] == 4 and four['mesh'] == 4
  assert len(one['losses']) == 32
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=2e-5)
  np.testing.assert_allclose(four['test'], one['test'], rtol=2e-5)
  # each parameter (4 devices sum the batch's gradient in another order: equal to rounding)
  with np.load(tmp_path / 'one' / 'params.npz') as a, np.load(tmp_path / 'four' / 'params.npz') as b:
    assert len(a.files) == len(b.files) == 16  # 8 layers: kernel and bias each
    for name in a.files:
      np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6)


NEIGHBORS_SCRIPT = '''
import jax, sys
jax.config.update('jax_num_cpu_devices', 4)
import numpy as np
from eval.neighbors import nearest_neighbors
from ae.parallel import make_mesh
rng = np.random.default_rng(0)
q = rng.integers(-2, 3, (50, 6)).astype(np.float32)
g = rng.integers(-2, 3, (300, 6)).astype(np.float32)
mesh = make_mesh()
assert mesh.size == 4
for m in ('euclidean', 'manhattan', 'cosine'):
  d4, i4 = nearest_neighbors(q, g, 7, m, query_chunk=16, gallery_chunk=100, mesh=mesh)
  d1, i1 = nearest_neighbors(q, g, 7, m, query_chunk=16, gallery_chunk=100)
  np.testing.assert_allclose(d4, d1, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(i4, i1)
print('ok')
'''


def test_queries_split_across_four_devices_give_the_same_neighbours():
  proc = run_python(['-c', NEIGHBORS_SCRIPT])
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]
