"""The exceptions that mean "the input was wrong": main reports them in one line, exit status 1."""

from ae.checkpoint import CheckpointError
from ae.config_check import ConfigError
from ae.data import DataError
from ae.train import NonFiniteLossError, Preempted
from eval.query_images import QueryImageError

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, QueryImageError)
