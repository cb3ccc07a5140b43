"""The training loop: each program compiled once (ahead, side by side), honest progress rates."""

import json
import logging

import jax

from ae import train
from conftest import tiny_config


def test_programs_compile_once_and_rates_are_per_chunk(tmp_path, caplog):
  # 256 images / 32 = 8 steps per epoch, 4 steps per call, a record every 2 steps: two records
  # per call; the first call compiles. Checkpoints at epoch ends: every call has 4 steps.
  config = tiny_config(train__steps_per_jit=4, train__log_every_steps=2,
                       train__checkpoint_every_steps=8)
  jax.config.update('jax_log_compiles', True)  # global: the compiling threads must see it too
  try:
    with caplog.at_level(logging.WARNING, logger='jax'):
      train.train(config, str(tmp_path / 'run'))
  finally:
    jax.config.update('jax_log_compiles', False)
  compiled = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith('Finished XLA compilation of jit(')]
  # init, the 4-step train call, the test pass and the epoch's images: compiled ahead, then found
  # by the real calls (a miss would compile again, or load from the persistent cache, and log once
  # more)
  for name in ('init', 'train_steps', 'apply_per_image_sse', 'apply_reconstruction_images'):
    assert sum(f'jit({name})' in m for m in compiled) == 1, (name, compiled)

  records = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  steps = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in steps] == list(range(2, 17, 2))
  rates = [r['imgs_per_s'] for r in steps]
  assert rates[:2] == [None, None]  # the first call: compilation, no rate
  assert all(r is not None and r > 0 for r in rates[2:])
  for a, b in zip(rates[2::2], rates[3::2]):  # the two records of one call share its rate
    assert a == b
  assert len([r for r in records if 'test/mse' in r]) == 2
