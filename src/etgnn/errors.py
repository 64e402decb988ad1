"""Exception hierarchy of etgnn.

Every error raised on bad user input derives from :class:`EtgnnError`; messages name the
file, the structure (frame) index and the field involved, what was expected and what was got.
"""

__all__ = ["EtgnnError", "ConfigError", "DataError", "ShapeError"]


class EtgnnError(Exception):
    """Base class of all etgnn errors."""


class ConfigError(EtgnnError, ValueError):
    """Invalid configuration: unknown key, bad value, missing section."""


class DataError(EtgnnError, ValueError):
    """Invalid input data: unreadable file, missing field, NaN label, bad structure."""


class ShapeError(DataError):
    """A tensor has the wrong number of values or the wrong shape for its rank/level."""
