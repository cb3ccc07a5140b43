"""What a run sets up before training: the runtime defaults, host memory that XLA:CPU reuses from
call to call, and a metrics log that does not wait for PyTorch."""

import json
import os
import platform

import pytest

from ae import parallel
from conftest import ROOT, run_python


def test_runtime_defaults_fill_in_and_never_override(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
  parallel.set_runtime_defaults()
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2',
                                             '--xla_gpu_enable_triton_gemm=false']
  assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  parallel.set_runtime_defaults()  # idempotent
  assert os.environ['XLA_FLAGS'].split().count('--xla_gpu_enable_triton_gemm=false') == 1

  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_enable_triton_gemm=true')
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'true')
  parallel.set_runtime_defaults()
  assert os.environ['XLA_FLAGS'] == '--xla_gpu_enable_triton_gemm=true'
  assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'true'


FAULTS_SCRIPT = '''
import json, resource
import numpy as np
from ae import host_memory, parallel
parallel.set_runtime_defaults()
import jax, jax.numpy as jnp
# A temporary of 81 MiB: a 4608 x 4608 product that two reductions read.
x = jnp.ones((4608, 8)) / 8
f = jax.jit(lambda x: jnp.sum(jnp.max(x @ x.T, axis=0)) + jnp.sum(jnp.max(x @ x.T, axis=1)))
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes

def faults_per_call(calls):
  # The heap grows in the first calls (several times here: blocks are freed while the next call
  # allocates), then stays: the median of the last half.
  faults = []
  for _ in range(calls):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  return sorted(faults[calls // 2:])[calls // 4]

def kept_after_free():  # MB of a 200 MB array still resident after it is freed
  resident = lambda: int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
  before = resident()
  np.ones(50_000_000, np.float32)
  return (resident() - before) / 2 ** 20

with host_memory.reuse_freed_memory():
  kept_inside = kept_after_free()
kept_after = kept_after_free()
with host_memory.reuse_freed_memory():
  inside = faults_per_call(40)
print(json.dumps({'temp_pages': temp / resource.getpagesize(), 'inside': inside,
                  'kept_inside_mb': kept_inside, 'kept_after_mb': kept_after}))
'''


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='the setting is for glibc')
def test_xla_temporaries_reuse_host_memory_while_training():
  def measure(env_extra):
    proc = run_python(['-c', FAULTS_SCRIPT], env_extra=env_extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])

  ours = measure({})
  assert ours['temp_pages'] > 16384  # over 64 MiB: more than a glibc thread arena serves
  assert ours['inside'] < 0.05 * ours['temp_pages'], ours
  # While training a freed array stays in the process; after it, large arrays go back to the
  # system when freed (the evaluation's would otherwise stay).
  assert ours['kept_inside_mb'] > 150 and ours['kept_after_mb'] < 20, ours
  # The user's own allocator setting wins; glibc then maps the temporaries afresh on every call.
  glibc = measure({'MALLOC_ARENA_MAX': '8'})
  assert glibc['inside'] > 0.5 * glibc['temp_pages'] and glibc['kept_inside_mb'] < 20, glibc


# A stand-in for an installed PyTorch that records being imported.
FAKE_TORCH = ('import os\n'
              'open(os.environ["TORCH_MARKER"], "a").write("imported\\n")\n'
              'Tensor = object\n')

SCRIPT = '''
import json, sys
from ae.metrics_log import MetricsLog, read_records
__import__('os').makedirs(sys.argv[1])
log = MetricsLog(sys.argv[1])
log.write({'step': 1, 'epoch': 0.5, 'train/loss': 0.25})
log.close()
during = 'torch' in sys.modules
import torch  # afterwards, an import of torch works as usual
print(json.dumps({'torch_during': during, 'records': read_records(sys.argv[1] + '/metrics.jsonl'),
                  'events': __import__('os').listdir(sys.argv[1] + '/tensorboard')}))
'''


def test_metrics_log_does_not_import_torch(tmp_path):
  fake = tmp_path / 'site' / 'torch'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text(FAKE_TORCH)
  marker = tmp_path / 'torch_imported'
  proc = run_python(['-c', SCRIPT, str(tmp_path / 'run')], env_extra={
      'PYTHONPATH': os.pathsep.join([str(tmp_path / 'site'), ROOT]),
      'TORCH_MARKER': str(marker)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not out['torch_during']
  assert out['records'] == [{'step': 1, 'epoch': 0.5, 'train/loss': 0.25}]
  assert any(n.startswith('events.out.tfevents') for n in out['events'])
  assert marker.read_text() == 'imported\n'  # once: by the script, not by the metrics log
