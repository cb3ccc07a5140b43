"""The options the XLA_FLAGS environment variable sets: a user's own setting wins over ours."""

import os


def flag_name(flag):
  """'--xla_foo=1' -> 'xla_foo'."""
  return flag.split('=')[0].lstrip('-')


def names_set():
  """The names of the options XLA_FLAGS sets now."""
  return {flag_name(f) for f in os.environ.get('XLA_FLAGS', '').split()}
