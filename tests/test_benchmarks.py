"""The benchmarks run and print well-formed JSON lines (tiny sizes; speed is not asserted), and
the GPU script (benchmarks/gpu_check.sh) gives its programs only flags they define."""

import collections
import json
import os
import platform
import re

import pytest

from ae.cpu import host_memory
from conftest import ROOT, run_python

# The benchmarks let XLA reuse its freed host memory as training does, where glibc lets them.
HOST_MEMORY_REUSE = (platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc' and
                    not any(name in os.environ for name in host_memory.USER_SETTINGS))


def _lines(proc):
  """The measurement lines, after checking the first line names the machine."""
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
  machine = lines[0]
  assert machine['bench'] == 'machine' and machine['cores'] >= 1 and machine['backend'] == 'cpu'
  assert machine['cpu'] and isinstance(machine['isa'], list)
  assert machine['host_memory_reuse'] is HOST_MEMORY_REUSE
  assert machine['train_step_compiler_options'] == {  # the CPU step's XLA options (ae/parallel.py)
      'xla_cpu_copy_insertion_use_region_analysis': True,
      'xla_cpu_experimental_ynn_fusion_type':
          'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  assert machine['inference_compiler_options'] == {  # and its forward-only programs'
      'xla_cpu_experimental_ynn_fusion_type':
          'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  return lines[1:]


@pytest.mark.slow
def test_query_speed_checks_against_brute_force_and_reports_each_metric():
  lines = _lines(run_python(['-m', 'benchmarks.query_speed', '--num_queries=300',
                             '--num_gallery=3000', '--repeats=1']))
  assert [l['metric'] for l in lines] == ['euclidean', 'manhattan', 'cosine']
  assert all(l['impl'] == 'ours' and l['ms'] > 0 and l['same_neighbours_as_brute_force'] == 1.0
             for l in lines)


@pytest.mark.slow
def test_train_speed_reports_images_per_second_and_flops():
  (line,) = _lines(run_python(['-m', 'benchmarks.train_speed', '--steps=2', '--windows=1',
                               '--num_images=512', '--batch_size=32']))
  assert line['bench'] == 'train_step' and line['imgs_per_s'] > 0
  assert 80e6 < line['flops_per_image'] < 90e6  # the seed model: about 82 MFLOP per image


def test_speed_ratios_give_the_ratio_of_medians_and_its_spread_over_the_rounds():
  from benchmarks import common
  seconds = {'ours': [1.0, 2.0, 1.0], 'keras': [2.0, 2.0, 1.5], 'torch': [3.0, 3.0, 3.0]}
  assert common.speed_ratios(seconds) == {
      'ours_over_keras': 2.0, 'ours_over_keras_rounds': [1.0, 1.5, 2.0],
      'ours_over_torch': 3.0, 'ours_over_torch_rounds': [1.5, 3.0, 3.0]}


@pytest.mark.slow
def test_a_peer_in_its_own_process_is_timed_window_by_window():
  from benchmarks.peer_process import PeerProcess
  env = dict(os.environ, PYTHONPATH=ROOT)
  code = ('import time; from benchmarks.peer_process import serve_windows; '
          'print("a line of its own"); '
          'serve_windows(lambda: time.sleep(0.05), {"framework": "sleep", "backend": "cpu"})')
  peer = PeerProcess('sleeper', ['-c', code], env=env)
  try:
    seconds = [peer.window() for _ in range(3)]
  finally:
    peer.close()
  assert all(0.05 <= t < 2.0 for t in seconds), seconds
  assert peer.about == {'framework': 'sleep', 'backend': 'cpu'}
  with pytest.raises(RuntimeError, match='the broken peer exited with status 3 before answering'):
    PeerProcess('broken', ['-c', 'import sys; sys.exit(3)'], env=env)


@pytest.mark.slow
def test_the_peers_processes_load_no_jax_and_none_of_our_settings():
  code = ('import sys, benchmarks.train_peers as t, benchmarks.query_peers as q; '
          'print(sorted(t.PEERS) + sorted(q.PEERS), '
          '[m for m in sys.modules if m.split(".")[0] in ("jax", "ae", "eval")])')
  proc = run_python(['-c', code])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == ["['keras',", "'torch',", "'faiss',", "'sklearn']", '[]']


@pytest.mark.slow
def test_a_query_peer_checks_its_neighbours_and_times_its_search_in_its_own_process():
  from benchmarks.peer_process import PeerProcess
  from eval.neighbors import METRICS
  from benchmarks import query_peers
  assert query_peers.METRICS == METRICS
  env = dict(os.environ, PYTHONPATH=ROOT)
  peer = PeerProcess('sklearn', ['-m', 'benchmarks.query_peers', 'sklearn', '--metric=manhattan',
                                 '--num_queries=300', '--num_gallery=2000', '--k=5'], env=env)
  try:
    seconds = [peer.window() for _ in range(2)]
  finally:
    peer.close()
  assert all(0 < t < 30 for t in seconds), seconds
  assert peer.about['framework'].startswith('scikit-learn ')
  assert peer.about['same_neighbours_as_brute_force'] == 1.0
  # The check itself: a wrong answer is counted as one.
  q, g, sample = query_peers.make_codes(300, 2000, 10)
  right = query_peers.brute_force_indices(q, g, 5, 'manhattan')
  assert query_peers.same_as_brute_force(right, q, g, sample, 'manhattan') == 1.0
  assert query_peers.same_as_brute_force(right[::-1], q, g, sample, 'manhattan') < 0.1


@pytest.mark.slow
def test_step_profile_splits_the_step_into_its_parts():
  """On one core (Linux) each op's trace event spans its own work, one op at a time: the parts
  must then account for most of the traced steps' wall time and never for more than all of it."""
  one_core = hasattr(os, 'sched_setaffinity')  # --cores needs Linux
  lines = _lines(run_python(['-m', 'benchmarks.step_profile', '--steps=4', '--num_images=64',
                             '--batch_size=16', '--top=5'] + ['--cores=1'] * one_core))
  total = lines[0]
  assert total['bench'] == 'step_profile_total' and total['wall_ms'] > 0
  assert total['ops_traced'] > 20
  parts = {l['part']: l for l in lines if l['bench'] == 'step_profile'}
  for part in ('encoder_forward', 'encoder_backward', 'decoder_forward', 'decoder_backward',
               'optimizer_and_other', 'input'):
    assert parts[part]['ms'] > 0, part
  if one_core:
    assert total['cores'] == 1  # the process ran on one core, as --cores=1 asked
    assert 0.5 * total['traced_wall_ms'] < total['ops_ms'] < 1.05 * total['traced_wall_ms'], total
  ops = [l for l in lines if l['bench'] == 'step_op']
  assert len(ops) == 5 and [l['ms'] for l in ops] == sorted((l['ms'] for l in ops), reverse=True)


@pytest.mark.slow
def test_train_speed_refuses_steps_that_are_not_whole_calls():
  proc = run_python(['-m', 'benchmarks.train_speed', '--steps=5', '--steps_per_jit=2'])
  assert proc.returncode != 0
  assert '--steps=5 must be a positive multiple of --steps_per_jit=2' in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='--cores needs Linux')
def test_step_profile_refuses_more_cores_than_it_may_use():
  allowed = len(os.sched_getaffinity(0))
  proc = run_python(['-m', 'benchmarks.step_profile', f'--cores={allowed + 1}'])
  assert proc.returncode != 0
  assert f'this process may use {allowed} cores' in proc.stderr


def test_step_profile_puts_each_op_in_the_part_its_source_names():
  from benchmarks.step_profile import part_of
  step = 'jit(train_steps)/while/body/closed_call/'
  f32 = 'f32[128,2048]{1,0}'
  cases = {
      (f32, 'fusion', step + 'jvp(AutoEncoder)/AutoEncoder.encode/encoder/Conv_1/dot_general'):
          'encoder_forward',
      (f32, 'fusion', step + 'transpose(jvp(AutoEncoder))/AutoEncoder.encode/encoder/select_n'):
          'encoder_backward',
      (f32, 'fusion', step + 'jvp(AutoEncoder)/AutoEncoder.decode/decoder_net/Dense_3/dot_general'):
          'decoder_forward',
      (f32, 'dot',
       step + 'transpose(jvp(AutoEncoder))/AutoEncoder.decode/decoder_net/Dense_3/transpose'):
          'decoder_backward',
      ('u32[128,32,32,3]{3,2,1,0}', 'fusion', step + 'jit(_normal)/jit(_uniform)/add'): 'input',
      ('u8[128,1,32,32,3]{4,3,2,1,0}', 'fusion', 'gather'): 'input',
      ('f32[128,3072]{1,0}', 'fusion', step + 'jvp()/sub'): 'loss',
      ('f32[2048,3072]{1,0}', 'copy', ''): 'buffer_copies',
      ('f32[2048,3072]{1,0}', 'fusion', 'add'): 'optimizer_and_other',
  }
  for (shape, opcode, source), part in cases.items():
    assert part_of(shape, opcode, source) == part, source


def test_results_table_has_a_pca_reference_per_latent_size(tmp_path):
  import json
  from benchmarks.results_table import build_table

  def run(name, dim, mse):
    d = tmp_path / name
    d.mkdir()
    metrics = {m: {'P@10': 0.3} for m in ('euclidean', 'manhattan', 'cosine')}
    (d / 'results.json').write_text(json.dumps({
        'test': {'mse': mse, 'psnr': 17.0}, 'retrieval': metrics,
        'references': {'pca': {'dim': dim, 'test_mse': {10: 0.02134, 32: 0.01236}[dim], **metrics},
                       'raw_pixels': {'dim': 3072, **metrics}}}))
    (d / 'config.json').write_text(json.dumps({'model': {'latent_dim': dim, 'decoder': 'dense'},
                                               'train': {'noise_std': 0.0}}))
    return str(d)

  table = build_table([run('b', 32, 0.013), run('a', 10, 0.021), run('c', 32, 0.012)]).splitlines()
  assert [l.split(' | ')[0] for l in table[2:]] == [
      '| b', '| a', '| c', '| PCA-10 (reference)', '| PCA-32 (reference)', '| raw pixels (reference)']
  assert '| PCA-32 (reference) | - | 32 | - | 0.01236 |' in table[-2]
  assert table[-1].startswith('| raw pixels (reference) | - | 3072 | - | - |')
  assert all(l.count('|') == table[0].count('|') for l in table)  # every row fills every column


def _gpu_check_commands():
  """{program: [its argv per command]} of the python3 commands benchmarks/gpu_check.sh runs."""
  with open(os.path.join(ROOT, 'benchmarks', 'gpu_check.sh')) as f:
    script = f.read().replace('\\\n', ' ')
  commands = collections.defaultdict(list)
  for module, args in re.findall(r'^bench \w+ (benchmarks\.\w+)(.*)$', script, re.M):
    commands[module].append(args.split())
  for args in re.findall(r'python3 main\.py (.*?) 2>', script):
    commands['main'].append(re.sub(r'\$\{\w+:-([^}]*)\}', r'\1', args).split())  # ${X:-default}
  return commands


# Parses each argv with the program's own absl flags (main.py: its config file and overrides, and
# checks each override's value landed in the config) without running anything.
_PARSE_ONLY = """
import json, sys
from absl import flags
module, argvs = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ['prog'] + argvs[0]  # config_flags defines the override flags it finds in sys.argv
__import__(module)
for argv in argvs:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['prog'] + argv)
  for arg in argv:
    if arg.startswith('--config.'):
      path, value = arg[len('--config.'):].split('=', 1)
      field = flags.FLAGS.config
      for name in path.split('.'):
        field = field[name]
      assert str(field) == value, (arg, field)
print('parsed', len(argvs))
"""


@pytest.mark.slow
def test_gpu_check_uses_only_flags_and_config_fields_that_exist():
  """A GPU machine is lent rarely and briefly: a mistyped flag in gpu_check.sh must fail here."""
  commands = _gpu_check_commands()
  assert set(commands) == {'main', 'benchmarks.train_speed', 'benchmarks.step_profile',
                           'benchmarks.query_speed', 'benchmarks.epoch_time'}
  # one main.py command line: config_flags defines override flags from sys.argv at import
  assert len(commands['main']) == 1 and '--config.data.source=synthetic' in commands['main'][0]
  for module, argvs in commands.items():
    proc = run_python(['-c', _PARSE_ONLY, module, json.dumps(argvs)])
    assert proc.returncode == 0 and f'parsed {len(argvs)}' in proc.stdout, (
        module, proc.stderr[-2000:])
