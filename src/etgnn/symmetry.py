"""Table S1 of the ETGNN paper: forces vanish on atoms whose site symmetry forbids a vector.

Every atom of ideal graphene, h-BN and diamond sits on a site whose point group (-6m2, -6m2 and
-43m) leaves no vector invariant, so an exactly equivariant model must predict a zero force on it
for *any* weights.  :func:`symmetry_test` checks this for untrained (random-weight) models over
several seeds and hyperparameter variants (activation, cutoff function, radial basis, widths,
depth; the paper's defaults included).

What "zero" means: a force is a sum of edge terms ``w_a e_a`` (:mod:`etgnn.nn.heads`) that
symmetry makes cancel, so floating-point round-off leaves a residual of order ``eps * sum_a
|w_a|``.  Each atom's residual |F| is therefore divided by ``sum_a |w_a|``, the summed magnitude of
the terms that cancel on that atom (same model, same units); the ratio is independent of the
arbitrary output scale of an untrained model, ~1e-15 in float64 and ~1e-7 in float32, whereas a
model that respects symmetry only approximately gives a ratio of order 1e-3 or more.  For
reference, the table also shows the largest force the same model predicts once the symmetry is
broken by moving every atom :data:`RATTLE` = 0.05 Angstrom in a random direction.

Reference: ETGNN, Zhong et al., "Edge-based Tensor prediction via graph neural networks",
supplementary Table S1.

>>> rows = symmetry_test(seeds=(0,), variants=VARIANTS[2:3])
>>> max(row.ratio for row in rows) < DEFAULT_TOLERANCE["float64"]
True
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

__all__ = [
    "Variant",
    "Row",
    "VARIANTS",
    "RATTLE",
    "DEFAULT_TOLERANCE",
    "table_s1_structures",
    "symmetry_test",
    "format_table",
    "add_parser",
]

#: Displacement of every atom (Angstrom) in the symmetry-broken reference structure.
RATTLE = 0.05

#: Largest accepted ratio ``|F| / sum_a |w_a|`` (see the module docstring), per dtype.
DEFAULT_TOLERANCE = {"float64": 1e-10, "float32": 1e-5}

#: Name of the rank-1 per-atom target predicted by the test models.
_FORCE = "forces"


@dataclass(frozen=True)
class Variant:
    """One hyperparameter choice: ``model`` overrides the defaults of :class:`etgnn.config.ModelConfig`."""

    name: str
    model: Mapping = field(default_factory=dict)


#: Hyperparameter variants: the paper's defaults once (128 channels, 4 blocks, elu, cosine cutoff,
#: Bessel basis), then small models covering every activation, cutoff function and radial basis.
VARIANTS: tuple[Variant, ...] = (
    Variant("paper defaults", {}),
    Variant("swish/poly/gauss", {"activation": "swish", "cutoff_function": "polynomial",
                                 "radial_basis": "gaussian", "hidden_channels": 32,
                                 "triplet_channels": 16, "num_blocks": 2}),
    Variant("silu/cos/gauss", {"activation": "silu", "radial_basis": "gaussian", "hidden_channels": 16,
                               "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 16}),
    Variant("elu/poly/bessel", {"cutoff_function": "polynomial", "hidden_channels": 48,
                                "triplet_channels": 24, "num_blocks": 3}),
)


@dataclass(frozen=True)
class Row:
    """Result for one structure, model variant and seed.

    Attributes:
        structure: structure name (``graphene``, ``h-BN``, ``diamond``).
        variant: :attr:`Variant.name`.
        seed: weight-initialisation seed (``model.seed``).
        sites: label of each atom, element and index, e.g. ``("B0", "N1")``.
        forces: |F| on each atom of the ideal structure (model units).
        terms: on each atom, ``sum_a |w_a|`` over the edge terms ``w_a e_a`` whose sum is F.
        rattled: max |F| of the same model on the structure with atoms moved by :data:`RATTLE`.
    """

    structure: str
    variant: str
    seed: int
    sites: tuple[str, ...]
    forces: tuple[float, ...]
    terms: tuple[float, ...]
    rattled: float

    @property
    def max_force(self) -> float:
        """Largest |F| over the atoms of the ideal structure."""
        return max(self.forces)

    @property
    def ratios(self) -> tuple[float, ...]:
        """``|F| / sum |w_a|`` per atom (infinite where an atom has no edge terms but a force)."""
        return tuple(f / t if t > 0 else (0.0 if f == 0 else float("inf"))
                     for f, t in zip(self.forces, self.terms))

    @property
    def ratio(self) -> float:
        """Largest per-atom ratio: what is compared with the tolerance."""
        return max(self.ratios)


def table_s1_structures() -> dict[str, Atoms]:
    """Ideal graphene, h-BN (periodic in-plane, 20 Angstrom along c, not periodic) and diamond."""
    from ase.build import bulk, graphene

    return {
        "graphene": graphene(formula="C2", a=2.46, vacuum=10.0),
        "h-BN": graphene(formula="BN", a=2.504, vacuum=10.0),
        "diamond": bulk("C", "diamond", a=3.567),
    }


def _rattled(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Copy of ``atoms`` with every atom moved by :data:`RATTLE` in a random direction."""
    step = rng.normal(size=(len(atoms), 3))
    out = atoms.copy()
    out.positions += RATTLE * step / np.linalg.norm(step, axis=1, keepdims=True)
    return out


def _forces_and_terms(model, batch) -> tuple[np.ndarray, np.ndarray]:
    """|F| per atom and the summed magnitude ``sum_a |w_a|`` of the edge terms ``w_a e_a`` of F.

    The second is the force head (:class:`etgnn.nn.heads.TensorHead`) re-evaluated on the same
    features with the outputs of its coefficient MLPs replaced by their absolute values and every
    unit edge vector by x: its x component is ``|scale| * sum_a |c_a| f(r_a) / edges_per_atom`` (a
    rank-1 head has no isotropic or three-body terms, and so no element shift either).

    Returns:
        two (n_atoms,) float64 arrays, model units.
    """
    import torch

    from .data import keys as K

    head = model.heads[_FORCE]
    seen = {}
    hook = head.register_forward_hook(lambda mod, args, out: seen.update(args=args))
    try:
        forces = model(batch)[_FORCE]
    finally:
        hook.remove()
    feats, geo = seen["args"]
    along_x = torch.zeros_like(geo[K.EDGE_UNIT])
    along_x[:, 0] = 1.0
    coefficient_mlps = [m for m in (head.edge_mlp, head.trip_mlp, head.iso_mlp) if m is not None]
    hooks = [m.register_forward_hook(lambda mod, args, out: out.abs()) for m in coefficient_mlps]
    try:
        terms = head.atom_tensors(feats, {**geo, K.EDGE_UNIT: along_x})[:, 0] * head.scale.abs()
    finally:
        for h in hooks:
            h.remove()
    return forces.norm(dim=-1).double().numpy(), terms.double().numpy()


def symmetry_test(
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[Variant] = VARIANTS,
    dtype: str = "float64",
    structures: Mapping[str, Atoms] | None = None,
) -> list[Row]:
    """Forces of random-weight models on the high-symmetry structures of Table S1.

    Args:
        seeds: weight-initialisation seeds; every variant is built once per seed.
        variants: hyperparameter variants.
        dtype: ``float32`` or ``float64`` model and batch precision.
        structures: name -> structure; defaults to :func:`table_s1_structures`.

    Returns:
        one :class:`Row` per (variant, seed, structure), in that nesting order.
    """
    import torch

    from .data.batch import collate
    from .model import build_model

    structures = dict(structures if structures is not None else table_s1_structures())
    rng = np.random.default_rng(0)
    names = list(structures)
    everything = [*structures.values(), *(_rattled(a, rng) for a in structures.values())]
    bounds = np.cumsum([0] + [len(a) for a in everything])
    rows = []
    for variant in variants:
        for seed in seeds:
            # one pass: _forces_and_terms re-evaluates the force head on the features it captures
            config = {"model": {**variant.model, "dtype": dtype, "seed": int(seed), "chunk_triplets": None},
                      "targets": {_FORCE: {"key": _FORCE, "level": "atom", "rank": 1}}}
            model = build_model(config).eval()
            graphs = [model.graph(a, where=f"symmetry test structure {k}") for k, a in enumerate(everything)]
            with torch.no_grad():
                forces, terms = _forces_and_terms(model, collate(graphs, dtype=model.dtype))
            for k, name in enumerate(names):
                atoms, own, broken = structures[name], slice(bounds[k], bounds[k + 1]), k + len(names)
                rows.append(Row(
                    structure=name, variant=variant.name, seed=int(seed),
                    sites=tuple(f"{s}{n}" for n, s in enumerate(atoms.get_chemical_symbols())),
                    forces=tuple(map(float, forces[own])), terms=tuple(map(float, terms[own])),
                    rattled=float(forces[bounds[broken] : bounds[broken + 1]].max()),
                ))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Plain aligned text, one line per atom, like Table S1 (|F| in model units)."""
    head = ("structure", "site", "variant", "seed", "|F|", "sum|terms|", "ratio", "|F| rattled")
    lines = []
    for row in rows:
        for site, f, t, r in zip(row.sites, row.forces, row.terms, row.ratios):
            lines.append((row.structure, site, row.variant, str(row.seed), f"{f:.3e}", f"{t:.3e}",
                          f"{r:.3e}", f"{row.rattled:.3e}"))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if k >= 3 else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), "-" * len(fmt(head)), *map(fmt, lines)])


def _run(args: argparse.Namespace) -> int:
    import time

    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[args.dtype]
    start = time.perf_counter()
    rows = symmetry_test(seeds=tuple(range(args.seeds)), variants=VARIANTS, dtype=args.dtype)
    print(f"Table S1 symmetry test ({args.dtype}, random-weight models): |F| on every atom of ideal "
          "structures, where symmetry makes it zero;\nsum|terms| = summed magnitude of the edge terms "
          f"that cancel; ratio = |F| / sum|terms|; |F| rattled = largest |F| with atoms moved {RATTLE} Angstrom")
    print(format_table(rows))
    worst = max(rows, key=lambda r: r.ratio)
    ok = worst.ratio < tolerance
    print(f"\nlargest ratio {worst.ratio:.3e} ({worst.structure}, {worst.variant}, seed {worst.seed}) "
          f"{'<' if ok else '>='} tolerance {tolerance:.1e}: {'PASS' if ok else 'FAIL'} "
          f"({len(rows)} rows, {time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``etgnn symmetry-test``."""
    p = subparsers.add_parser(
        "symmetry-test",
        help="check that random-weight models give zero forces on symmetric sites (paper Table S1)",
        description="Predict forces with random-weight models (several seeds and hyperparameter "
                    "variants) on every atom of ideal graphene, h-BN and diamond, where symmetry "
                    "forces them to vanish.  Exit code 1 unless every |F| / sum|terms| ratio is "
                    "below the tolerance.",
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of weight seeds (default 3)")
    p.add_argument("--dtype", choices=sorted(DEFAULT_TOLERANCE), default="float64",
                   help="model precision (default float64)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest accepted ratio (default 1e-10 for float64, 1e-5 for float32)")
    p.set_defaults(func=_run)
    return p
