"""etgnn: edge-based tensor prediction graph neural networks (ETGNN) for molecules and crystals."""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, EtgnnError, ShapeError  # noqa: E402

__all__ = ["__version__", "EtgnnError", "ConfigError", "DataError", "ShapeError"]
