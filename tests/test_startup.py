"""What a run sets up before training: the runtime defaults, host memory that XLA:CPU reuses from
call to call, and a metrics log that does not wait for PyTorch."""

import json
import os
import platform
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae import inference, parallel, runtime, train
from ae.augment import Augmentation
from ae.cpu import compiler_options
from ae.model import create_model
from conftest import ROOT, run_python, tiny_config


def test_runtime_defaults_fill_in_and_never_override(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
  runtime.set_runtime_defaults()
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2',
                                             '--xla_gpu_enable_triton_gemm=false']
  assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  runtime.set_runtime_defaults()  # idempotent
  assert os.environ['XLA_FLAGS'].split().count('--xla_gpu_enable_triton_gemm=false') == 1

  monkeypatch.setenv('XLA_FLAGS', '--xla_gpu_enable_triton_gemm=true')
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'true')
  runtime.set_runtime_defaults()
  assert os.environ['XLA_FLAGS'] == '--xla_gpu_enable_triton_gemm=true'
  assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'true'


def test_cpu_train_step_options_follow_the_environment_and_this_jaxlib(monkeypatch, caplog):
  mesh = parallel.make_mesh()
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  ours = dict(compiler_options.TRAIN_STEP)
  assert compiler_options.for_train_step(mesh) == ours
  name = next(iter(ours))
  monkeypatch.setenv('XLA_FLAGS', f'--{name}=false')  # the environment's own setting stays
  assert compiler_options.for_train_step(mesh) == {k: v for k, v in ours.items() if k != name}
  monkeypatch.delenv('XLA_FLAGS')
  monkeypatch.setitem(compiler_options.TRAIN_STEP, 'xla_cpu_no_such_option', True)
  with caplog.at_level('WARNING'):
    options = compiler_options.for_train_step(mesh)  # an option this jaxlib lacks: skipped
  assert options == ours and 'xla_cpu_no_such_option' in caplog.text


def _forward_inputs(config, mesh):
  """What make_batched_fn's programs take: a train state, the model, 8 images, their indices."""
  state = train.create_train_state(config, mesh, total_steps=10)
  images = parallel.put(np.zeros((8, 32, 32, 3), np.uint8), parallel.replicated(mesh))
  idx = parallel.put(np.arange(8, dtype=np.int32), parallel.data_sharded(mesh))
  return state, create_model(config.model, 'cpu'), images, idx


@pytest.mark.slow  # pins XLA:CPU's compiled program
def test_cpu_forward_programs_run_the_encoder_convolutions_outside_ynnpack(monkeypatch):
  """make_batched_fn compiles with compiler_options.INFERENCE: each of the encoder's
  convolutions is then an instruction of its own (XLA's Eigen convolution), not a YNNPACK fusion
  (XLA's default on the CPU, 3.5x slower here)."""
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  mesh = parallel.make_mesh()
  assert compiler_options.for_inference(mesh) == compiler_options.INFERENCE
  config = tiny_config(model__encoder_features=(32, 64, 128))  # the default's (YNNPACK takes them)
  state, model, images, idx = _forward_inputs(config, mesh)

  def convolution_instructions():
    encode = inference.make_batched_fn(mesh, lambda p, x, i: model.apply(p, x, method=model.encode))
    text = encode.lower(state.params, images, idx).compile().as_text()
    return re.findall(r'\n  %\S+ = \S+ convolution\(', text)

  assert len(convolution_instructions()) == len(config.model.encoder_features)
  monkeypatch.setattr(compiler_options, 'INFERENCE', {})
  assert not convolution_instructions()  # XLA's default: each inside a YNNPACK fusion


@pytest.mark.slow  # pins XLA:CPU's default YNNPACK fusion list
def test_cpu_forward_options_change_nothing_but_the_convolutions(monkeypatch):
  """compiler_options.INFERENCE is XLA's default list of YNNPACK fusion types less
  convolutions, written out: a forward program without convolutions (the decoder's products,
  elementwise ops and a reduction) compiles to the same program with it as without it. If a
  jaxlib changes its default list, this fails: bring the list up to date."""
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  mesh = parallel.make_mesh()
  config = tiny_config()
  state, model, images, idx = _forward_inputs(config, mesh)

  def sse(p, x, i):  # the decoder from the first pixels as codes
    z = x.reshape(x.shape[0], -1)[:, :config.model.latent_dim]
    return jnp.sum(jnp.square(model.apply(p, z, method=model.decode) - x), axis=(1, 2, 3))

  def program(options):  # the compiled instructions, without their source locations
    monkeypatch.setattr(compiler_options, 'INFERENCE', options)
    text = inference.make_batched_fn(mesh, sse).lower(state.params, images, idx).compile().as_text()
    return [re.sub(r', metadata=\{[^}]*\}', '', line) for line in text.splitlines()
            if re.match(r'\s*(ROOT )?%', line)]

  (name, types), = compiler_options.INFERENCE.items()
  ours = program({name: types})
  assert ours == program({}), 'XLA\'s default YNNPACK fusion types changed'
  assert any('ynn_fusion' in line for line in ours)
  for fewer in (types.split(',')[:1], types.split(',')[1:]):  # the comparison can tell
    assert program({name: ','.join(fewer)}) != ours


@pytest.mark.slow  # pins XLA:CPU's compiled program
def test_cpu_train_step_updates_the_kernels_in_place():
  """The Adam update overwrites each weight matrix after the backward pass has read it: the
  compiled step keeps no copy of any of them (XLA's default copy insertion copies them)."""
  mesh = parallel.make_mesh()
  config = tiny_config()
  state = train.create_train_state(config, mesh, total_steps=10)
  images = parallel.put(np.zeros((8, 32, 32, 3), np.uint8), parallel.replicated(mesh))
  idx = parallel.put(np.zeros((1, 8), np.int32), parallel.data_sharded(mesh, 2, 1))
  lowered = train.make_train_fn(mesh, 0, Augmentation(noise_std=0.1)).lower(state, images, idx)
  kernels = {jax.ShapeDtypeStruct(p.shape, p.dtype) for p in jax.tree.leaves(state.params)
             if p.ndim >= 2}

  def copied_kernels(compiled):  # copies of the weights as they came in (not of a gradient)
    shapes = re.findall(r'= f32\[([0-9,]+)\]\{[0-9,]+\} copy\(%state_params', compiled.as_text())
    return {s for s in shapes
            if jax.ShapeDtypeStruct(tuple(map(int, s.split(','))), np.float32) in kernels}

  assert copied_kernels(lowered.compile()) == set()
  name = next(iter(compiler_options.TRAIN_STEP))
  assert copied_kernels(lowered.compile(compiler_options={name: False}))  # the default copies


FAULTS_SCRIPT = '''
import json, resource
import numpy as np
from ae import runtime
from ae.cpu import host_memory
runtime.set_runtime_defaults()
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


@pytest.mark.slow  # counts page faults
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
