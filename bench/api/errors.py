"""Errors the user can act on; the CLI prints them without a traceback."""


class BenchError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DataError(BenchError):
    """Missing, corrupt or inconsistent data; the message names the file or row at fault."""


class MissingDataError(DataError):
    """A data file that is not there (as opposed to one that is there but bad)."""


class TrainingError(BenchError):
    """A unit failed during training (NaN loss, out of memory, ...)."""
