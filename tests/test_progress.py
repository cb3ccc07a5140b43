"""The training's progress records and lines, on a clock the test sets."""

import types

import pytest

from ae.progress import Progress, StartupTimer, format_eta


class Clock:
  def __init__(self, t=0.0):
    self.t = t

  def __call__(self):
    return self.t


def _progress(clock, start_step=0, log_every=2):
  # 2 epochs of 8 steps of 32 images
  return Progress(start_step, total_steps=16, steps_per_epoch=8, batch_size=32,
                  log_every=log_every, clock=clock)


def test_window_means_and_rates_per_chunk_the_first_chunk_without_one():
  clock = Clock()
  p = _progress(clock)
  clock.t = 10.0  # the first chunk (steps 1-4) compiled: no rate
  first = p.add_chunk(0, [4.0, 2.0, 1.0, 3.0])
  assert first == [{'step': 2, 'epoch': 0.25, 'train/loss': 3.0, 'imgs_per_s': None},
                   {'step': 4, 'epoch': 0.5, 'train/loss': 2.0, 'imgs_per_s': None}]
  assert p.eta_s(4) is None and p.line(first[1]).endswith('? imgs/s ETA ?')
  clock.t = 12.0  # 4 steps of 32 images in 2 s since the last logged chunk
  second = p.add_chunk(4, [1.0, 1.0, 0.5, 0.5])
  assert [r['imgs_per_s'] for r in second] == [64.0, 64.0]  # one rate for a chunk's records
  assert [r['train/loss'] for r in second] == [1.0, 0.5]
  assert p.eta_s(8) == pytest.approx(4.0)  # 8 steps left at 2 steps/s
  assert p.line(second[1]) == 'epoch 1/2 step 8/16 loss 0.50000 64 imgs/s ETA 0m04s'


def test_a_window_spans_chunks_and_a_chunk_without_a_record_keeps_the_rate_running():
  clock = Clock()
  p = _progress(clock, log_every=6)
  clock.t = 1.0
  assert p.add_chunk(0, [1.0, 1.0, 1.0, 1.0]) == []
  clock.t = 3.0
  (record,) = p.add_chunk(4, [4.0, 4.0, 9.0, 9.0])
  assert record['step'] == 6 and record['train/loss'] == 2.0  # steps 1-6
  assert record['imgs_per_s'] == pytest.approx(4 * 32 / 2.0)  # from the first chunk's end
  clock.t = 5.0
  records = p.add_chunk(8, [0.0] * 8)  # steps 9-16: a record at 12 and one at the last step
  assert [r['step'] for r in records] == [12, 16] and records[1]['train/loss'] == 0.0
  assert records[0]['imgs_per_s'] == pytest.approx(8 * 32 / 2.0)


def test_test_passes_stay_out_of_rates_and_the_first_one_out_of_the_eta():
  clock = Clock(100.0)
  p = Progress(0, total_steps=24, steps_per_epoch=8, batch_size=32, log_every=4, clock=clock)
  clock.t = 110.0
  p.add_chunk(0, [1.0] * 4)
  clock.t = 112.0
  p.add_chunk(4, [3.0] * 4)
  clock.t = 113.0  # the first test pass ran from 112.5 to 113 (compiling)
  epoch = p.end_epoch(0, 8, 0.25, eval_start=112.5)
  assert epoch == {'step': 8, 'epoch': 1, 'train/epoch_loss': 2.0, 'test/mse': 0.25,
                   'epoch_time_s': 13.0, 'epoch_imgs_per_s': 8 * 32 / 13.0}
  assert p.line(epoch) == ('epoch 1/3 done: train loss 2.00000, test MSE 0.25000, 13.0 s '
                           '(20 imgs/s)')
  clock.t = 115.0
  (a,) = p.add_chunk(8, [1.0] * 4)
  assert a['imgs_per_s'] == pytest.approx(4 * 32 / (115.0 - 112.0 - 0.5))
  assert p.eta_s(12) == pytest.approx(12 / (8 / (115.0 - 110.0 - 0.5)))
  clock.t = 117.0
  p.add_chunk(12, [1.0] * 4)
  clock.t = 118.0  # a later test pass: out of the rates, but part of the run's pace
  p.end_epoch(1, 16, 0.2, eval_start=117.5)
  clock.t = 120.0
  (b,) = p.add_chunk(16, [1.0] * 4)
  assert b['imgs_per_s'] == pytest.approx(4 * 32 / (120.0 - 117.0 - 0.5))
  assert p.eta_s(20) == pytest.approx(4 / (16 / (120.0 - 110.0 - 0.5)))


def test_a_resumed_run_counts_from_its_first_step_and_its_first_test_pass():
  clock = Clock()
  p = Progress(8, total_steps=24, steps_per_epoch=8, batch_size=32, log_every=2, clock=clock)
  config = types.SimpleNamespace(noise_std=0.1, random_noise_std=True)
  assert p.plan(config) == ('Training 24 steps (3 epochs x 8 steps of 32 images) from step 8; '
                            'noise_std=0.1 (per image, uniform in [0, noise_std]).')
  clock.t = 1.0
  a, b, c, d = p.add_chunk(8, [2.0] * 8)
  assert [r['step'] for r in (a, b, c, d)] == [10, 12, 14, 16] and a['imgs_per_s'] is None
  assert a['epoch'] == 1.25
  clock.t = 3.0
  p.end_epoch(1, 16, 0.1, eval_start=2.0)  # this run's first test pass, in epoch 2: out of the ETA
  clock.t = 4.0
  p.add_chunk(16, [1.0] * 4)
  assert p.eta_s(20) == pytest.approx(4 / (4 / (4.0 - 1.0 - 1.0)))


def test_eta_format_and_the_startup_timer():
  assert format_eta(59) == '0m59s' and format_eta(3600 + 125) == '1h02m'
  assert format_eta(-3) == '0m00s'
  clock = Clock(5.0)
  timer = StartupTimer(clock)
  clock.t = 6.5
  timer.done('data')
  clock.t = 7.0
  timer.done('compile')
  assert timer.summary() == '2.0 s: data 1.5 s, compile 0.5 s'
