"""Errors that a user must act on.

Everything that derives from ``VigilError`` is printed by the command line as
one line, without a traceback, and ends the process with a non-zero exit.
"""


class VigilError(Exception):
    """A problem with the user's input or stored artifacts."""


class DatasetError(VigilError):
    """A data source is missing, unreadable or inconsistent."""


class TableError(VigilError):
    """A Parquet table breaks its pandera schema."""


class NotFoundError(VigilError):
    """An artifact (run, model version, snapshot) does not exist."""


class StorageError(VigilError):
    """The artifact root cannot be written (permissions, a file in the way)."""
