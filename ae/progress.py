"""The training's progress: mean losses per log window and per epoch, images/s, ETA, start-up time.

Losses arrive a chunk at a time: the steps of one jitted call, fetched after the next call was
dispatched. A rate is only known per chunk, so each comes from the time between the ends of two
logged chunks, and every record of a chunk carries the same one. The first chunk holds the
compilation: no rate (None, not a made-up number), and the ETA's pace starts after it. Test passes
at epoch ends are not training: they are taken out of the rates, and the first one, which
compiles, out of the ETA's pace too.
"""

import dataclasses
import time


def format_eta(seconds):
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


@dataclasses.dataclass
class _Mean:
  total: float = 0.0
  count: int = 0

  def add(self, value):
    self.total += value
    self.count += 1

  def mean(self):
    return self.total / max(self.count, 1)


class Progress:
  """Turns fetched chunks of losses into metrics.jsonl records and progress lines."""

  def __init__(self, start_step, total_steps, steps_per_epoch, batch_size, log_every,
               clock=time.time):
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self.batch_size, self.log_every, self.clock = batch_size, log_every, clock
    self.start_step, self._first_epoch = start_step, start_step // steps_per_epoch
    self._logged = None  # (time, step) at the end of the last logged chunk: where rates start
    self._paced = None  # (time, step) at the end of the first chunk: where the ETA's pace starts
    self._pace = 0.0  # steps per second since then
    self._window, self._epoch = _Mean(), _Mean()
    self._epoch_start = clock()

  def plan(self, train_config):
    """The line that says what the run will do."""
    t = train_config
    spread = ' (per image, uniform in [0, noise_std])' if t.random_noise_std and t.noise_std else ''
    return (f'Training {self.total_steps} steps ({self.total_steps // self.steps_per_epoch} epochs '
            f'x {self.steps_per_epoch} steps of {self.batch_size} images) from step '
            f'{self.start_step}; noise_std={t.noise_std:g}{spread}.')

  def add_chunk(self, first_step, losses):
    """Takes the losses of steps first_step + 1 ...; returns the records due among them."""
    now, last = self.clock(), first_step + len(losses)
    rate = None
    if self._logged is None:
      self._logged = self._paced = (now, last)
    elif now > self._logged[0]:
      rate = (last - self._logged[1]) * self.batch_size / (now - self._logged[0])
    since, step0 = self._paced
    self._pace = (last - step0) / (now - since) if now > since else 0.0
    records = []
    for i, loss in enumerate(losses):
      step = first_step + i + 1
      self._window.add(float(loss))
      self._epoch.add(float(loss))
      if step % self.log_every == 0 or step == self.total_steps:
        records.append({'step': step, 'epoch': step / self.steps_per_epoch,
                        'train/loss': self._window.mean(), 'imgs_per_s': rate})
        self._window = _Mean()
    if records:
      self._logged = (now, last)
    return records

  def end_epoch(self, epoch, step, test_mse, eval_start):
    """The epoch's record; the test pass (begun at eval_start) leaves the rates and the ETA."""
    now = self.clock()
    took = now - self._epoch_start
    record = {'step': step, 'epoch': epoch + 1, 'train/epoch_loss': self._epoch.mean(),
              'test/mse': test_mse, 'epoch_time_s': took,
              'epoch_imgs_per_s': self._epoch.count * self.batch_size / took}
    self._epoch, self._epoch_start = _Mean(), now
    paused = now - eval_start
    if self._logged is not None:
      self._logged = (self._logged[0] + paused, self._logged[1])
      if epoch == self._first_epoch:
        self._paced = (self._paced[0] + paused, self._paced[1])
    return record

  def eta_s(self, step):
    """Seconds of training left after step at the current pace (None before it is known)."""
    return (self.total_steps - step) / self._pace if self._pace > 0 else None

  def line(self, record):
    """The log line of a record from add_chunk or end_epoch."""
    num_epochs = self.total_steps // self.steps_per_epoch
    step = record['step']
    if 'test/mse' in record:
      return (f"epoch {record['epoch']}/{num_epochs} done: train loss "
              f"{record['train/epoch_loss']:.5f}, test MSE {record['test/mse']:.5f}, "
              f"{record['epoch_time_s']:.1f} s ({record['epoch_imgs_per_s']:.0f} imgs/s)")
    rate, eta = record['imgs_per_s'], self.eta_s(step)
    return (f"epoch {(step - 1) // self.steps_per_epoch + 1}/{num_epochs} step {step}/"
            f"{self.total_steps} loss {record['train/loss']:.5f} "
            f"{'?' if rate is None else f'{rate:.0f}'} imgs/s "
            f"ETA {'?' if eta is None else format_eta(eta)}")


class StartupTimer:
  """Wall seconds of the consecutive start-up phases, for the 'Ready to train' line."""

  def __init__(self, clock=time.time):
    self.clock = clock
    self.t0 = self.t = clock()
    self.seconds = {}

  def done(self, name):
    now = self.clock()
    self.seconds[name] = now - self.t
    self.t = now

  def summary(self):
    return (f'{self.t - self.t0:.1f} s: '
            + ', '.join(f'{name} {s:.1f} s' for name, s in self.seconds.items()))
