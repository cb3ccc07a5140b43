"""The benchmarks run and print well-formed JSON lines (tiny sizes; speed is not asserted)."""

import json

from conftest import run_python


def _lines(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]


def test_query_speed_checks_against_brute_force_and_reports_each_metric():
  lines = _lines(run_python(['-m', 'benchmarks.query_speed', '--num_queries=300',
                             '--num_gallery=3000', '--repeats=1']))
  assert [l['metric'] for l in lines] == ['euclidean', 'manhattan', 'cosine']
  assert all(l['impl'] == 'ours' and l['ms'] > 0 and l['same_neighbours_as_brute_force'] == 1.0
             for l in lines)


def test_train_speed_reports_images_per_second_and_flops():
  (line,) = _lines(run_python(['-m', 'benchmarks.train_speed', '--steps=2', '--windows=1',
                               '--num_images=512', '--batch_size=32']))
  assert line['bench'] == 'train_step' and line['imgs_per_s'] > 0
  assert 80e6 < line['flops_per_image'] < 90e6  # the seed model: about 84 MFLOP per image
