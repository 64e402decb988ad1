"""etgnn: edge-based tensor prediction graph neural networks (ETGNN) for molecules and crystals.

Public API::

    model = etgnn.build_model(config)         # dict, YAML path or Config
    preds = model.predict(structures)         # list of {target: numpy array}
    model.save(path); model = etgnn.load_model(path)
    atoms.calc = etgnn.ETGNNCalculator(model, aliases={"mu": "dipole"})   # ASE calculator
"""

from ._version import __version__  # noqa: E402

from .config import Config, load_config  # noqa: E402
from .errors import ConfigError, DataError, EtgnnError, ShapeError  # noqa: E402
from .model import ETGNN, build_model, load_model  # noqa: E402
from .calculator import ETGNNCalculator  # noqa: E402
from .predict import Predictor  # noqa: E402

__all__ = [
    "__version__",
    "ETGNN",
    "ETGNNCalculator",
    "Predictor",
    "Config",
    "build_model",
    "load_model",
    "load_config",
    "EtgnnError",
    "ConfigError",
    "DataError",
    "ShapeError",
]
