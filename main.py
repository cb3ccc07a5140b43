"""Trains and evaluates the CIFAR-10 autoencoder.

    python main.py --config=configs/denoise.py [--workdir=runs/denoise] [--mode=train|eval|query]

train: ae/train.py (then eval/evaluate.py); eval: eval/evaluate.py; query: eval/query_images.py.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config file stem>.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'query'],
                          'train: train then evaluate; eval: evaluate the latest checkpoint in '
                          'workdir; query: nearest gallery images of --query files.')
_QUERY = flags.DEFINE_multi_string('query', [], 'Query image files or globs (--mode=query).')
flags.mark_flags_as_required(['config'])

_ROOT = os.path.dirname(os.path.abspath(__file__))
_OWN_CODE = tuple(os.path.join(_ROOT, name) for name in ('main.py', 'ae' + os.sep, 'eval' + os.sep))


class _OwnInfoOnly(logging.logging.Filter):
  """Keeps INFO lines from this project only: orbax and jax log each checkpoint write in detail
  (a virtual environment inside the checkout is not the project's code)."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or record.pathname.startswith(_OWN_CODE)


def default_workdir(config_path):
  return os.path.join('runs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def train_and_evaluate(config, workdir):
  """Trains (or resumes), draws the training curves, then evaluates (config.eval.enabled)."""
  from ae import runtime, train, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from eval import figures  # pylint: disable=g-import-not-at-top
  with workdir_lib.hold(workdir):  # from the first check to the last file written
    state, mesh, ds = train.train(config, workdir)
    with runtime.stop_at_once():
      figures.plot_training(workdir)
      if config.eval.enabled:
        from eval import evaluate  # pylint: disable=g-import-not-at-top
        evaluate.evaluate(config, workdir, state.params, mesh, ds)
  return state


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Imported here so that --help and flag errors do not wait for JAX.
  from ae import runtime, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from ae.errors import USER_ERRORS, Preempted  # pylint: disable=g-import-not-at-top
  runtime.set_runtime_defaults()
  # Some imported library adds a root handler of its own; filter every handler.
  for handler in logging.logging.getLogger().handlers + [logging.get_absl_handler().python_handler]:
    handler.addFilter(_OwnInfoOnly())
  runtime.maybe_initialize_distributed()
  runtime.log_devices()
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  logging.info('workdir %s, mode %s', workdir, _MODE.value)
  try:
    if _MODE.value == 'train':
      train_and_evaluate(config, workdir)
    elif _MODE.value == 'eval':
      from eval.evaluate import evaluate_workdir  # pylint: disable=g-import-not-at-top
      evaluate_workdir(config, workdir)
    else:
      from eval.query_images import query_main  # pylint: disable=g-import-not-at-top
      return query_main(config, workdir, _QUERY.value)
  except Preempted as e:
    logging.warning('stopped cleanly: %s', e)
    return 0
  except Exception as e:  # pylint: disable=broad-except
    error = e if isinstance(e, USER_ERRORS) else workdir_lib.disk_full_error(e, workdir)
    if error is None:
      raise
    logging.error('%s', error)
    print(f'error: {error}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
