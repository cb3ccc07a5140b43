"""metrics.jsonl and TensorBoard event files (scalars, images), written by process 0 only."""

import json
import os
import sys

import jax

from ae.workdir import write_whole, writing


def read_records(path):
  """Whole, parseable JSON lines of a metrics file; a torn last line is dropped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  Importing tensorboardX tries `import torch`, only to accept torch tensors in its add_* calls
  (this project logs Python floats). Where PyTorch is installed that import alone takes seconds of
  every run's start. It is turned away for the moment of the import, unless
  torch is loaded already; a later `import torch` works as usual.
  """
  block = 'torch' not in sys.modules
  if block:
    sys.modules['torch'] = None  # `import torch` raises ImportError while this entry is None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if block and sys.modules.get('torch', False) is None:
      del sys.modules['torch']
  return SummaryWriter


class MetricsLog:
  """Appends one JSON object per event to workdir/metrics.jsonl and mirrors scalars to TensorBoard.

  On resume from step s, records after s (written by the interrupted run after its last
  checkpoint) and any torn line are dropped first, so the file never holds duplicates.
  """

  def __init__(self, workdir, resume_step=0):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if not self.active:
      return
    kept = [r for r in read_records(self.path) if r.get('step', 0) <= resume_step]
    write_whole(self.path, ''.join(json.dumps(r) + '\n' for r in kept))
    self._file = open(self.path, 'a')
    writer = _summary_writer_class()
    self._tb = writer(os.path.join(workdir, 'tensorboard'), purge_step=resume_step + 1)

  def write(self, record):
    if not self.active:
      return
    with writing(self.path):
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()
    for k, v in record.items():
      if k not in ('step', 'epoch') and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, record['step'])

  def image(self, tag, image_HxWxC, step):
    """A uint8 image summary (TensorBoard's Images tab)."""
    if self.active:
      self._tb.add_image(tag, image_HxWxC, step, dataformats='HWC')

  def close(self):
    if self.active:
      with writing(self.path):
        self._file.close()
      self._tb.close()
