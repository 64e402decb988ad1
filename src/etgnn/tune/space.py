"""The hyperparameter search space, as data.

A space maps a dotted config path (as in ``etgnn train CONFIG model.num_blocks=4``) to either a
tuple of choices (categorical) or a :class:`Range` (uniform or log-uniform, integer when both
bounds are integers).  :data:`DEFAULT_SPACE` is the space of the ETGNN paper (Table S3):

=========================  ==========================================
``model.hidden_channels``  64, 96, 128, 160, 192
``model.num_blocks``       2, 4, 6 (interaction blocks)
``model.activation``       swish, elu, silu
``model.cutoff_function``  polynomial (envelope), cosine
``model.radial_basis``     gaussian, bessel
``training.lr``            log-uniform in [1e-4, 5e-3]
``training.batch_size``    8, 16, 32, 64
=========================  ==========================================

Users edit it with a YAML file (:func:`load_space_file`) or with command-line strings
(:func:`parse_choice`, :func:`parse_range`); in a file, a list is a set of choices, a mapping
``{low, high, log}`` a range, a single value fixes the parameter and ``null`` drops it from the
search (the base config's value is used)::

    model.hidden_channels: [64, 128]
    training.lr: {low: 1.0e-4, high: 1.0e-3, log: true}
    model.num_blocks: 2          # fixed
    model.radial_basis: null     # not searched
    defaults: false              # start from an empty space instead of the paper's

Every path and every value is checked against the config (:func:`validate_space`), so a typo is
a :class:`~etgnn.errors.ConfigError` before any trial runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import load_config, read_yaml_mapping
from ..errors import ConfigError

__all__ = ["Range", "DEFAULT_SPACE", "merge_space", "load_space_file", "parse_choice", "parse_range",
           "parse_value", "validate_space", "override", "suggest", "describe_space"]


@dataclass(frozen=True)
class Range:
    """A numeric interval ``[low, high]``, sampled uniformly (or log-uniformly with ``log``).

    Integer bounds give integer samples.
    """

    low: float
    high: float
    log: bool = False

    @property
    def is_int(self) -> bool:
        """Both bounds are integers (``suggest_int``)."""
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))

    def __str__(self) -> str:
        return f"{'log-uniform' if self.log else 'uniform'} in [{self.low:g}, {self.high:g}]"


#: The ETGNN paper's search space (see the module docstring).
DEFAULT_SPACE: dict[str, Any] = {
    "model.hidden_channels": (64, 96, 128, 160, 192),
    "model.num_blocks": (2, 4, 6),
    "model.activation": ("swish", "elu", "silu"),
    "model.cutoff_function": ("polynomial", "cosine"),
    "model.radial_basis": ("gaussian", "bessel"),
    "training.lr": Range(1e-4, 5e-3, log=True),
    "training.batch_size": (8, 16, 32, 64),
}

#: config paths a search may not touch (each trial sets its own run directory)
_RESERVED = ("run_dir",)
_FIXED = object()  # marker: not a search dimension


def parse_value(text: str) -> Any:
    """Parse one value as YAML, reading ``1e-4`` (a string in YAML 1.1) as a number.

    >>> parse_value("1e-4"), parse_value("16"), parse_value("elu")
    (0.0001, 16, 'elu')
    """
    value = yaml.safe_load(text) if text.strip() else None
    return _number_or_self(value)


def _number_or_self(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _spec(path: str, raw: Any) -> Any:
    """Normalise one entry: tuple of choices, Range, ``(_FIXED, value)`` or None (dropped)."""
    if isinstance(raw, Range) or raw is None:
        return raw
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise ConfigError(f"search space {path!r}: empty list of choices")
        choices = tuple(_number_or_self(v) for v in raw)
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"search space {path!r}: repeated choices in {list(choices)}")
        return choices if len(choices) > 1 else (_FIXED, choices[0])
    if isinstance(raw, Mapping):
        extra = set(raw) - {"low", "high", "log"}
        if extra or not {"low", "high"} <= set(raw):
            raise ConfigError(f"search space {path!r}: a range is a mapping with keys low, high and optional "
                              f"log, got keys {sorted(raw)}")
        low, high = (_number_or_self(raw[k]) for k in ("low", "high"))
        log = raw.get("log", False)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
                or not isinstance(log, bool):
            raise ConfigError(f"search space {path!r}: low/high must be numbers and log true/false, got {dict(raw)}")
        if isinstance(low, int) != isinstance(high, int):
            low, high = float(low), float(high)
        rng = Range(low, high, log)
        if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
            raise ConfigError(f"search space {path!r}: need low < high (and low > 0 for log), got {rng}")
        return rng
    return (_FIXED, _number_or_self(raw))


def merge_space(base: Mapping[str, Any], updates: Mapping[str, Any]) -> tuple[dict, dict]:
    """Apply ``updates`` (path -> choices / range mapping / value / None) to ``base``.

    Returns:
        ``(space, fixed)``: the search dimensions and the fixed ``{path: value}`` settings.
        A fixed value in ``base`` (a one-element choice list) also lands in ``fixed``.
    """
    space, fixed = {}, {}
    for source in (base, updates):
        for path, raw in source.items():
            if not isinstance(path, str) or not path.strip():
                raise ConfigError(f"search space keys are dotted config paths, got {path!r}")
            spec = _spec(path, raw)
            fixed.pop(path, None)
            if isinstance(spec, tuple) and spec and spec[0] is _FIXED:
                space.pop(path, None)
                fixed[path] = spec[1]
            elif spec is not None:
                space[path] = spec  # an edited entry keeps its place
            else:
                space.pop(path, None)
    return space, fixed


def load_space_file(path: str | Path, base: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Read a YAML space file (format in the module docstring) on top of ``base``.

    Args:
        path: the YAML file.
        base: the space it edits (default :data:`DEFAULT_SPACE`; ``defaults: false`` in the
            file starts from an empty space instead).

    Returns:
        ``(space, fixed)`` as :func:`merge_space`.
    """
    path = Path(path)
    raw = dict(read_yaml_mapping(path, "search space file"))
    use_defaults = raw.pop("defaults", True)
    if not isinstance(use_defaults, bool):
        raise ConfigError(f"search space file {path}: 'defaults' must be true or false")
    start = (DEFAULT_SPACE if base is None else base) if use_defaults else {}
    try:
        return merge_space(start, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_choice(text: str) -> tuple[str, tuple]:
    """``"model.num_blocks=2,4"`` -> ``("model.num_blocks", (2, 4))``.

    >>> parse_choice("model.activation=elu,silu")
    ('model.activation', ('elu', 'silu'))
    """
    path, values = _split(text, "--choice PATH=V1,V2,...")
    return path, tuple(parse_value(v) for v in values.split(","))


def parse_range(text: str) -> tuple[str, Range]:
    """``"training.lr=1e-4:1e-3:log"`` -> ``("training.lr", Range(0.0001, 0.001, log=True))``."""
    path, values = _split(text, "--range PATH=LOW:HIGH[:log]")
    parts = values.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
        raise ConfigError(f"{text!r} must look like PATH=LOW:HIGH or PATH=LOW:HIGH:log")
    spec = _spec(path, {"low": parse_value(parts[0]), "high": parse_value(parts[1]), "log": len(parts) == 3})
    return path, spec


def _split(text: str, form: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"{text!r} must look like {form}")
    path, values = text.split("=", 1)
    if not path.strip() or not values.strip():
        raise ConfigError(f"{text!r} must look like {form}")
    return path.strip(), values


def override(path: str, value: Any) -> str:
    """A ``"path=value"`` override string whose value reads back exactly (``1e-5`` stays a float).

    >>> override("training.lr", 1e-5), override("model.activation", "elu")
    ('training.lr=1.0e-05', 'model.activation=elu')
    """
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{path}={text.removesuffix('...').strip()}"


def validate_space(config: Any, space: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> None:
    """Check every path and value of a search space against ``config``.

    Each choice (or each bound of a range) is applied to the config on its own, so an unknown
    path or an invalid value (``model.activation: gelu``) fails here, not in a trial.

    Raises:
        ConfigError: naming the space entry, e.g. ``search space 'model.hiden_channels':
            unknown key model.hiden_channels; did you mean 'hidden_channels'?``.
    """
    fixed = dict(fixed or {})
    base = [override(p, v) for p, v in fixed.items()]
    for path in list(space) + list(fixed):
        if path.split(".")[0] in _RESERVED:
            raise ConfigError(f"search space {path!r}: {path} is set by the search itself (one run directory "
                              "per trial) and cannot be searched or fixed")
    try:
        load_config(config, base)
    except ConfigError as exc:
        raise ConfigError(f"fixed search settings {base}: {exc}") from None
    for path, spec in space.items():
        values = (spec.low, spec.high) if isinstance(spec, Range) else spec
        for value in values:
            try:
                load_config(config, base + [override(path, value)])
            except ConfigError as exc:
                raise ConfigError(f"search space {path!r}: {exc}") from None


def suggest(trial, space: Mapping[str, Any]) -> dict:
    """Sample one value per dimension of ``space`` from an ``optuna.Trial``."""
    params = {}
    for path, spec in space.items():
        if isinstance(spec, Range) and spec.is_int:
            params[path] = trial.suggest_int(path, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Range):
            params[path] = trial.suggest_float(path, spec.low, spec.high, log=spec.log)
        else:
            params[path] = trial.suggest_categorical(path, list(spec))
    return params


def describe_space(space: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> str:
    """Human-readable listing of a search space, one line per parameter."""
    width = max((len(p) for p in [*space, *(fixed or {})]), default=0)
    lines = [f"  {p:<{width}}  {s if isinstance(s, Range) else ', '.join(map(str, s))}" for p, s in space.items()]
    lines += [f"  {p:<{width}}  fixed: {v}" for p, v in (fixed or {}).items()]
    return "\n".join(lines)
