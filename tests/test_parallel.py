"""The same run on 1 and on 4 (fake CPU) devices gives the same losses and parameters."""

import json

import numpy as np

from conftest import run_python

SCRIPT = '''
import json, sys
import jax
jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
import numpy as np
from conftest import tiny_config
from ae import train
from ae.metrics_log import read_records
config = tiny_config(train__log_every_steps=1, train__batch_size=16)
state, mesh, _ = train.train(config, sys.argv[2])
losses = [r['train/loss'] for r in read_records(sys.argv[2] + '/metrics.jsonl') if 'train/loss' in r]
tests = [r['test/mse'] for r in read_records(sys.argv[2] + '/metrics.jsonl') if 'test/mse' in r]
print(json.dumps({'devices': jax.device_count(), 'mesh': mesh.size, 'losses': losses, 'test': tests,
                  'sums': [float(np.abs(np.asarray(x)).sum()) for x in jax.tree.leaves(state.params)]}))
'''


def _run(n, workdir):
  proc = run_python(['-c', SCRIPT, str(n), str(workdir)])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_device(tmp_path):
  one, four = _run(1, tmp_path / 'one'), _run(4, tmp_path / 'four')
  assert one['devices'] == 1 and four['devices'] == 4 and four['mesh'] == 4
  assert len(one['losses']) == 32
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=2e-5)
  np.testing.assert_allclose(four['test'], one['test'], rtol=2e-5)
  np.testing.assert_allclose(four['sums'], one['sums'], rtol=1e-4)


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
