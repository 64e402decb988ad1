"""Typed, validated configuration (one YAML file drives model, targets, data and training).

Every section is a frozen dataclass; unknown keys are errors that suggest the closest valid key,
and choices are checked before any data is read.  Example::

    model: {cutoff: 6.0, triplet_cutoff: 4.0, hidden_channels: 128, num_blocks: 4,
            activation: elu, cutoff_function: cosine, radial_basis: bessel, seed: 0}
    targets:
      born_charges: {key: becs, level: atom, rank: 2, sum_rule: true}
      epsilon:      {key: eps,  level: structure, rank: 2, symmetry: "ij=ji"}
    data: {train: train.xyz}
    training: {max_epochs: 100, max_time: 30}
    run_dir: runs/example
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError
from .pretrained import is_model_name, read_model_config

__all__ = [
    "ModelConfig",
    "TargetConfig",
    "DataConfig",
    "TrainingConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "read_yaml_mapping",
    "resolve_paths",
    "PATH_KEYS",
    "CHOICES",
]

#: Allowed values of every choice-valued option, ``"section.field"`` -> choices.
CHOICES: dict[str, tuple] = {
    "model.activation": ("elu", "swish", "silu", "relu", "tanh"),
    "model.cutoff_function": ("cosine", "polynomial"),
    "model.radial_basis": ("bessel", "gaussian"),
    "model.dtype": ("float32", "float64"),
    "model.checkpoint": ("none", "blocks", "chunks"),
    "target.level": ("atom", "structure"),
    "target.reduce": ("mean", "sum"),
    "target.loss": ("euclidean", "mse", "mae", "cosine"),
    "target.voigt_order": ("vasp", "standard"),
    "training.device": ("auto", "cpu", "cuda"),
    "training.lr_schedule": ("plateau", "cosine"),
    "training.strategy": ("auto", "ddp"),
    "training.uncertainty": ("none", "llpr"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Backbone hyperparameters (defaults: the ETGNN paper's)."""

    cutoff: float = 6.0  #: edge cutoff, Angstrom
    triplet_cutoff: float = 4.0  #: only edges shorter than this form triplets, Angstrom
    max_neighbors: Optional[int] = None  #: keep nearest N only; breaks exact site symmetry
    hidden_channels: int = 128  #: width of the atom and edge embeddings and messages
    triplet_channels: int = 128  #: width of the triplet-feature stream (three-body terms)
    num_blocks: int = 4  #: interaction (message-passing) blocks
    int_emb_size: int = 64  #: width of the per-triplet angular messages (DimeNet++ interaction)
    basis_emb_size: int = 8  #: bottleneck of the radial / angular basis projections
    num_radial: int = 6  #: radial basis functions per edge
    num_spherical: int = 7  #: Legendre polynomials P_0..P_{L-1} of the triplet angle
    envelope_exponent: int = 5  #: exponent of the polynomial envelope (cutoff_function: polynomial)
    activation: str = "elu"  #: nonlinearity of every MLP
    cutoff_function: str = "cosine"  #: smooth cutoff of the edge lengths: cosine, or a polynomial envelope
    radial_basis: str = "bessel"  #: radial basis of the edge lengths
    dtype: str = "float32"  #: floating-point precision of weights and predictions
    seed: int = 0  #: seed of the weight initialisation
    smooth_triplets: bool = True  #: damp every triplet message by g(r_a) g(r_b), so predictions are continuous at triplet_cutoff (false only for etgnn 0.1.0 checkpoints)
    chunk_triplets: Optional[int] = 16384  #: run the forward pass over chunks of centre atoms of about this many triplets each (exact; bounds memory, keeps large cells as fast per atom as small ones); null: one pass
    checkpoint: str = "none"  #: training only, trade compute for memory (exact): "blocks" recomputes each interaction block in backward, "chunks" each chunk of centre atoms (memory flat in the structure size; loss.backward() only); "none" stores all
    checkpoint_budget_gb: Optional[float] = None  #: with checkpoint: chunks, keep the activations of chunks up to about this many GB per batch and recompute only the rest (faster where memory allows, same gradients); null: recompute every chunk


@dataclass(frozen=True)
class TargetConfig:
    """One tensor target: which data field, its rank and level, constraints and loss."""

    key: str  #: field name in the data
    level: str = "structure"  #: "atom" (per-atom tensors) or "structure"
    rank: int = 0
    reduce: str = "mean"  #: structure targets: mean (intensive) or sum (extensive) over atoms
    symmetry: Optional[str] = None  #: index symmetry formula, e.g. "ij=ji", "ijk=ikj"
    sum_rule: bool = False  #: per-atom targets: tensors of a structure sum to zero (exact projection)
    sum_rule_weight: float = 0.0  #: per-atom targets: weight of a soft sum-to-zero loss term instead
    isotropic: bool = True  #: zero-body isotropic terms (s * delta_ab, ...)
    two_body: bool = True
    three_body: bool = True
    mixed: bool = True  #: rank >= 3: edge vectors times Kronecker deltas in every index placement
    chiral: bool = True  #: rank 3: pseudoscalar x epsilon_ijk term (chiral sites)
    four_body: bool = True  #: four-body scalars in the three-body coefficients (tell (a, b) from (b, a))
    voigt_order: str = "vasp"  #: order of Voigt-form inputs
    transpose: bool = False  #: swap the two indices of rank-2 inputs
    loss: str = "euclidean"
    weight: float = 1.0
    unit: str = ""  #: unit of the data, e.g. e, e*Angstrom, Debye, au; the ASE calculator converts with it
    gradient_of: Optional[str] = None  #: name of an energy target (level structure, rank 0, reduce sum): this per-atom rank-1 target is then minus its gradient with respect to the positions (conservative forces, F = -dE/dR) instead of a head of its own


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split."""

    train: Optional[str] = None  #: training data file or folder (any reader format, or etgnn:<path> for shipped data)
    val: Optional[str] = None  #: validation data; default: a random part of data.train (data.split)
    test: Optional[str] = None  #: test data; default: a random part of data.train (data.split)
    format: Optional[str] = None  #: reader format (docs/data_formats.md); default: detected from the name
    split: tuple = (0.6, 0.2, 0.2)  #: train/val/test fractions when val/test files are absent
    split_seed: int = 0  #: seed of the random train/val/test split
    cache_dir: Optional[str] = "user"  #: graph cache folder; "user": the per-user cache (etgnn.data.cache); null: none
    num_workers: int = 2  #: processes building graphs
    max_structures: Optional[int] = None  #: read only the first N structures of each file, validation and test files too (quick trials; a warning says so)
    sum_rule_threshold: Optional[float] = None  #: drop structures with |sum of per-atom tensor| above (e)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings (AdamW, learning rate x0.5 on plateau)."""

    max_epochs: int = 500  #: stop after this many epochs
    max_time: Optional[float] = None  #: wall-clock budget, minutes
    batch_size: int = 16  #: structures per optimisation step
    lr: float = 1e-3  #: initial AdamW learning rate
    weight_decay: float = 0.01  #: AdamW weight decay
    lr_schedule: str = "plateau"  #: plateau: x lr_factor when the validation loss stalls (the paper's); cosine: anneal lr -> min_lr over max_epochs or max_time, whichever ends first (training stops there; max_time then counts every resumed session)
    lr_factor: float = 0.5  #: learning rate x this when the validation loss plateaus
    lr_patience: int = 10  #: epochs without improvement before the learning rate drops
    min_lr: float = 1e-6  #: lower bound of the learning rate
    warmup_epochs: float = 0.0  #: ramp the learning rate up linearly over this many epochs (per step)
    early_stopping_patience: int = 40  #: stop after this many epochs without a significant improvement
    grad_clip: Optional[float] = 10.0  #: clip the gradient norm to this; null: no clipping
    ema_decay: Optional[float] = None  #: EMA decay of the weights (e.g. 0.99); the EMA weights are evaluated and saved
    device: str = "auto"  #: auto: cuda if available, else cpu
    strategy: str = "auto"  #: ddp: distributed data parallel over training.devices processes
    devices: int = 1  #: processes (GPUs or CPU workers) per node with strategy ddp
    num_nodes: int = 1  #: nodes with strategy ddp (start them with torchrun)
    seed: int = 0  #: seed of the shuffling and of every random number of an epoch
    progress: bool = True  #: progress bars (shown on a terminal only; one line per epoch is always printed)
    tensorboard: bool = False  #: also log losses, lr and val metrics to run_dir/tensorboard (pip install tensorboard)
    freeze_backbone: bool = False  #: with init_from: train the heads only (the backbone's weights stay the source model's)
    backbone_lr_factor: float = 1.0  #: with init_from: the backbone learns at lr x this (e.g. 0.1), the heads at lr
    uncertainty: str = "none"  #: llpr: after training, fit a calibrated per-component uncertainty (last-layer prediction rigidity; one pass over the training data, calibrated on the validation part) into best.ckpt (docs/uncertainty.md)
    ensemble: int = 1  #: N > 1: a deep ensemble, N models trained one after the other with seeds model.seed + k and training.seed + k in run_dir/member_k (--resume continues member by member), joined in run_dir/best.ckpt: their mean is the prediction, their spread (calibrated on the validation part) the uncertainty NAME_std (docs/uncertainty.md); 1: one model


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    targets: dict = field(default_factory=dict)  #: one entry per target, name -> settings (section targets.NAME)
    model: ModelConfig = field(default_factory=ModelConfig)  #: backbone hyperparameters (section model)
    data: DataConfig = field(default_factory=DataConfig)  #: data files and splits (section data)
    training: TrainingConfig = field(default_factory=TrainingConfig)  #: optimisation settings (section training)
    run_dir: str = "runs/etgnn"  #: output folder of a training run (checkpoints, logs, metrics, plots)
    init_from: Optional[str] = None  #: fine-tune: start from this model's weights (a shipped model's name, e.g. dielectric-v1, or a model file); its architecture is taken, its backbone and the heads of targets with the same name and form are loaded, other targets get new heads


def _unknown_key(key: str, valid, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown key {where}.{key}{hint}".replace("config..", "config."))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string; take it as the number it is
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(value)
    return value


def _build(cls, raw: Any, where: str):
    if isinstance(raw, cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(key, names, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where} is missing required key(s): {', '.join(missing)}")
    return cls(**kwargs)


def _check_choice(section: str, name: str, value: Any, where: str) -> None:
    choices = CHOICES.get(f"{section}.{name}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}.{name} must be one of {list(choices)}, got {value!r}")


def _validate(cfg: Config) -> None:
    m = cfg.model
    for f in dataclasses.fields(m):
        _check_choice("model", f.name, getattr(m, f.name), "model")
    if m.cutoff <= 0 or not 0 < m.triplet_cutoff <= m.cutoff:
        raise ConfigError(f"need 0 < model.triplet_cutoff <= model.cutoff, got {m.triplet_cutoff} and {m.cutoff}")
    for name in ("hidden_channels", "triplet_channels", "num_blocks", "int_emb_size", "basis_emb_size",
                 "num_radial", "num_spherical"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.chunk_triplets is not None and m.chunk_triplets < 1:
        raise ConfigError(f"model.chunk_triplets must be >= 1 or null, got {m.chunk_triplets}")
    if m.checkpoint == "chunks" and m.chunk_triplets is None:
        raise ConfigError("model.checkpoint: chunks needs model.chunk_triplets (an integer, e.g. 16384)")
    if m.checkpoint_budget_gb is not None:
        if m.checkpoint != "chunks":
            raise ConfigError(f"model.checkpoint_budget_gb applies to model.checkpoint: chunks, not {m.checkpoint!r}")
        if not m.checkpoint_budget_gb >= 0:
            raise ConfigError(f"model.checkpoint_budget_gb must be >= 0 or null, got {m.checkpoint_budget_gb}")
    if m.max_neighbors is not None and m.max_neighbors < 1:
        raise ConfigError(f"model.max_neighbors must be >= 1 or null, got {m.max_neighbors}")
    if not cfg.targets:
        raise ConfigError("config has no targets: add a 'targets' section, e.g. "
                          "targets: {forces: {key: forces, level: atom, rank: 1}}")
    for name, t in cfg.targets.items():
        where = f"targets.{name}"
        for f in dataclasses.fields(t):
            _check_choice("target", f.name, getattr(t, f.name), where)
        if t.rank < 0:
            raise ConfigError(f"{where}.rank must be >= 0, got {t.rank}")
        if t.sum_rule and t.level != "atom":
            raise ConfigError(f"{where}.sum_rule applies to per-atom targets only (level: atom)")
        if t.symmetry is not None:
            from .tensors import parse_symmetry

            try:
                parse_symmetry(t.symmetry, t.rank)
            except Exception as exc:
                raise ConfigError(f"{where}.symmetry: {exc}") from None
        if t.sum_rule_weight < 0 or (t.sum_rule_weight > 0 and t.level != "atom"):
            raise ConfigError(f"{where}.sum_rule_weight must be >= 0 and needs level: atom")
        if t.weight < 0:
            raise ConfigError(f"{where}.weight must be >= 0, got {t.weight}")
        if t.gradient_of is not None:
            _validate_gradient_target(cfg, name, t)
    tr = cfg.training
    for f in dataclasses.fields(tr):
        _check_choice("training", f.name, getattr(tr, f.name), "training")
    if tr.batch_size < 1 or tr.max_epochs < 0 or tr.lr <= 0:
        raise ConfigError("training.batch_size and training.lr must be positive, max_epochs >= 0")
    if not 0 < tr.lr_factor < 1:
        raise ConfigError(f"training.lr_factor must be in (0, 1), got {tr.lr_factor}")
    if not 0 <= tr.min_lr <= tr.lr:
        raise ConfigError(f"need 0 <= training.min_lr <= training.lr, got min_lr {tr.min_lr} and lr {tr.lr}")
    if tr.warmup_epochs < 0:
        raise ConfigError(f"training.warmup_epochs must be >= 0, got {tr.warmup_epochs}")
    if tr.ensemble < 1:
        raise ConfigError(f"training.ensemble must be an integer >= 1 (the number of models of a deep ensemble; "
                          f"1: one model), got {tr.ensemble}")
    if tr.ensemble > 1 and tr.uncertainty != "none":
        raise ConfigError(f"training.ensemble: {tr.ensemble} is its own uncertainty (the members' spread); drop "
                          f"training.uncertainty: {tr.uncertainty} (or set training.ensemble: 1 for LLPR)")
    if not tr.backbone_lr_factor > 0:
        raise ConfigError(f"training.backbone_lr_factor must be > 0, got {tr.backbone_lr_factor} "
                          "(use training.freeze_backbone: true to keep the backbone fixed)")
    if cfg.init_from is None and (tr.freeze_backbone or tr.backbone_lr_factor != 1.0):
        raise ConfigError("training.freeze_backbone and training.backbone_lr_factor apply to fine-tuning: "
                          "set init_from (a shipped model's name or a model file)")
    split = cfg.data.split
    if len(split) != 3 or any(s < 0 for s in split) or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"data.split must be three non-negative fractions summing to 1, got {list(split)}")


def _validate_gradient_target(cfg: Config, name: str, t: TargetConfig) -> None:
    """A target ``gradient_of`` an energy: per-atom rank 1, the energy a summed scalar."""
    where = f"targets.{name}.gradient_of"
    energy = cfg.targets.get(t.gradient_of)
    if energy is None:
        close = difflib.get_close_matches(t.gradient_of, list(cfg.targets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the targets are {', '.join(cfg.targets)}"
        raise ConfigError(f"{where}: no target named {t.gradient_of!r}{hint}")
    if (t.level, t.rank) != ("atom", 1):
        raise ConfigError(f"{where}: a gradient with respect to the positions is a per-atom vector; set "
                          f"targets.{name}.level: atom and rank: 1 (got level {t.level}, rank {t.rank})")
    if energy.gradient_of is not None or (energy.level, energy.rank, energy.reduce) != ("structure", 0, "sum"):
        raise ConfigError(f"{where}: {t.gradient_of!r} must be an energy, a structure target of rank 0 summed over "
                          f"atoms (level: structure, rank: 0, reduce: sum), got level {energy.level}, rank "
                          f"{energy.rank}, reduce {energy.reduce}")
    if t.sum_rule or t.sum_rule_weight or t.symmetry:
        raise ConfigError(f"targets.{name}: sum_rule, sum_rule_weight and symmetry do not apply to a gradient target "
                          "(minus the gradient of a translation-invariant energy sums to zero exactly)")
    if cfg.model.checkpoint == "chunks":
        raise ConfigError(f"{where}: model.checkpoint: chunks cannot differentiate twice (the loss on forces needs "
                          "the gradient of a gradient); use model.checkpoint: blocks or none")


def load_config(source: Any, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from a dict, a YAML path or a ``Config``.

    Args:
        source: mapping, path to a YAML file, or an existing ``Config``.  Relative paths written
            in a YAML file (:data:`PATH_KEYS`) resolve against the file's folder.
        overrides: ``"dotted.key=value"`` strings applied before validation (values parsed as
            YAML; relative paths in them resolve against the current directory).

    Raises:
        ConfigError: unreadable file, unknown key (with the closest valid key), bad value.
    """
    if isinstance(source, Config) and not overrides:
        _validate(source)
        return source
    if isinstance(source, Config):
        raw = config_to_dict(source)
    elif isinstance(source, (str, Path)):
        raw = resolve_paths(read_yaml_mapping(source, "config file"), Path(source).parent)
    elif isinstance(source, dict):
        raw = source
    else:
        raise ConfigError(f"cannot build a config from {type(source).__name__}")
    raw = apply_overrides(raw, overrides or [])
    top = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in top:
            raise _unknown_key(key, top, "config")
    if raw.get("init_from") is not None:
        raw = dict(raw, model=source_architecture(raw))
    targets_raw = raw.get("targets") or {}
    if not isinstance(targets_raw, dict):
        raise ConfigError("targets must be a mapping of target name -> settings")
    targets = {str(n): _build(TargetConfig, t, f"targets.{n}") for n, t in targets_raw.items()}
    cfg = Config(
        targets=targets,
        model=_build(ModelConfig, raw.get("model"), "model"),
        data=_build(DataConfig, raw.get("data"), "data"),
        training=_build(TrainingConfig, raw.get("training"), "training"),
        run_dir=_coerce(raw.get("run_dir", Config.run_dir), str, "run_dir"),
        init_from=_coerce(raw.get("init_from"), Optional[str], "init_from"),
    )
    _validate(cfg)
    return cfg


#: model settings that define the network's weights: with ``init_from`` they are the source model's
ARCHITECTURE_KEYS = ("cutoff", "triplet_cutoff", "max_neighbors", "hidden_channels", "triplet_channels", "num_blocks",
                     "int_emb_size", "basis_emb_size", "num_radial", "num_spherical", "envelope_exponent",
                     "activation", "cutoff_function", "radial_basis", "smooth_triplets", "dtype")


def source_architecture(raw: dict) -> dict:
    """The model section of a config with ``init_from``: the source model's architecture
    (:data:`ARCHITECTURE_KEYS`) and the config's other model settings (chunking, checkpointing,
    seed).

    Raises:
        ConfigError: the config sets an architecture key to another value than the source's.
        DataError: ``init_from`` names no model file or shipped model.
    """
    name = _coerce(raw["init_from"], str, "init_from")
    source = read_model_config(name).get("model", {})
    given = raw.get("model") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"model must be a mapping, got {type(given).__name__}")
    for key in ARCHITECTURE_KEYS:
        if key in given and key in source and given[key] != source[key]:
            raise ConfigError(f"model.{key} is {given[key]!r} but init_from {name} was built with {source[key]!r}; "
                              f"leave model.{key} out (fine-tuning takes the source's architecture) or drop "
                              "init_from to train from scratch")
    return {**{k: source[k] for k in ARCHITECTURE_KEYS if k in source}, **given}


#: config entries holding paths: relative ones written in a config file resolve against its folder
PATH_KEYS = (("data", "train"), ("data", "val"), ("data", "test"), ("data", "cache_dir"), ("run_dir",), ("init_from",))
#: values of path entries that are not paths
_NOT_PATHS = ("user",)


def resolve_paths(raw: dict, folder: Path) -> dict:
    """Copy of ``raw`` whose relative :data:`PATH_KEYS` are made absolute against ``folder``.

    Absolute paths, ``~/...``, ``etgnn:`` package paths, ``null`` and ``cache_dir: user`` are kept.
    """
    import copy
    import os

    out = copy.deepcopy(raw)
    for keys in PATH_KEYS:
        node = out
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if (not isinstance(value, str) or value in _NOT_PATHS or value.startswith(("etgnn:", "~"))
                or is_model_name(value)):
            continue
        if not os.path.isabs(value):
            node[keys[-1]] = os.path.normpath(os.path.abspath(os.path.join(folder, value)))
    return out


def read_yaml_mapping(path, what: str = "config file") -> dict:
    """Read a YAML file whose top level is a mapping (an empty file gives ``{}``).

    Args:
        path: the file.
        what: how errors name the file, e.g. ``"config file"`` or ``"search space file"``.

    Raises:
        ConfigError: unreadable file, invalid YAML, or a top level that is not a mapping.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with ``"a.b.c=value"`` overrides applied (value parsed as YAML).

    Raises:
        ConfigError: an override without ``=``.
    """
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, value = item.split("=", 1)
        parts = path.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return out


def config_to_dict(cfg: Config) -> dict:
    """Plain-dict form of a config (YAML-serialisable; tuples become lists)."""

    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (tuple, list)):
            return [conv(v) for v in x]
        return x

    return conv(cfg)
