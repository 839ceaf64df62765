"""The logger a task writes its progress lines to."""

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run; a plain logger when called via ``.fn()``."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("vigil")
