"""The version of etgnn, in a module of its own so that any module can name it without importing the
package's public API (:mod:`etgnn`, which imports the model)."""

__version__ = "0.3.0"
