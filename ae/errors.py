"""The exceptions a user can cause: main.py reports each in one line and exits with status 1.

They live here, apart from the code that raises them, so that main.py can catch them all without
importing JAX or any module that does.
"""


class ConfigError(Exception):
  """The config asks for something impossible; the message says which field and how to fix it."""


class DataError(Exception):
  """A data source is missing, incomplete or damaged."""


class CheckpointError(Exception):
  """A checkpoint is missing or does not fit the configured model, or a workdir is unusable."""


class WorkdirInUseError(Exception):
  """Another run holds the workdir."""


class DiskFullError(Exception):
  """The disk filled while the run wrote a file; its message says which and how to go on."""


class NonFiniteLossError(Exception):
  """The loss became NaN or Inf; training stopped before saving the bad state."""


class QueryImageError(Exception):
  """A query file is not a usable image."""


class Preempted(Exception):
  """SIGTERM/SIGINT arrived and the run stopped cleanly (not an error): in training at a step,
  whose checkpoint was saved; in the evaluation (step None), which the same command redoes."""

  def __init__(self, signal_name, step=None):
    if step is None:
      message = (f'{signal_name} during the evaluation, whose files are incomplete; training is '
                 'complete: run the same command again to evaluate')
    else:
      message = f'{signal_name} at step {step}; checkpoint saved, rerun to continue'
    super().__init__(message)
    self.signal_name, self.step = signal_name, step


USER_ERRORS = (ConfigError, DataError, CheckpointError, WorkdirInUseError, DiskFullError,
               NonFiniteLossError, QueryImageError)
