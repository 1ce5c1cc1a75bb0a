"""The one exception type users see.

Anything caused by the user's input (config, CLI arguments, data files, messages from clients) is
raised as a `GeneflError` with a one-line message naming the problem; the CLI prints that line and
exits with status 2 instead of showing a traceback.
"""


class GeneflError(Exception):
    """A problem with the user's input, explained in one line."""


class ConfigError(GeneflError):
    """An invalid configuration key, type or value."""


class DataError(GeneflError):
    """A missing, truncated or corrupt data file."""
