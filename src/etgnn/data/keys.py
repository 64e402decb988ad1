"""The single registry of field names used inside etgnn.

Structural (graph) fields start with an underscore; they are built by
:func:`etgnn.data.graph.build_graph` and batched by :func:`etgnn.data.batch.collate`.

Edge convention (defined here once):
    ``_edge_index[0]`` is the *centre* atom ``i`` and ``_edge_index[1]`` the *neighbour* ``j``.
    The edge vector points from the centre to the neighbour image::

        r_ij = positions[j] + _edge_shift - positions[i]        (Angstrom)

    so ``_edge_shift = S @ cell`` with ``S`` the integer image offset.  Every ordered pair appears
    (full neighbour list), periodic images are separate edges, and an atom may neighbour its own
    image in a small cell.

Triplet convention:
    A triplet is an ordered pair of two *different* edges ``(a, b)`` that share their centre atom
    ``i`` and are both shorter than ``triplet_cutoff``: neighbours ``j = a.neighbour`` and
    ``k = b.neighbour`` (``j`` and ``k`` may be images of the same atom).  ``_triplet_a`` and
    ``_triplet_b`` index into the edges.  The paper's three-body term
    ``e_kj (x) e_ji`` centred on ``j`` is, up to sign, ``e_a (x) e_b`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FieldSpec",
    "register",
    "FIELDS",
    "POSITIONS",
    "NUMBERS",
    "CELL",
    "PBC",
    "BATCH",
    "N_ATOMS",
    "EDGE_INDEX",
    "EDGE_SHIFT",
    "TRIPLET_A",
    "TRIPLET_B",
    "EDGE_GRAPH",
    "EDGE_VECTOR",
    "EDGE_LENGTH",
    "EDGE_UNIT",
    "EDGE_CUTOFF",
    "EDGE_TRIPLET_CUTOFF",
    "fields",
]

# --- structural fields -------------------------------------------------------------------
#: (n_atoms, 3) float | Cartesian positions, Angstrom
POSITIONS = "_positions"
#: (n_atoms,) int64 | atomic numbers
NUMBERS = "_numbers"
#: (n_graphs, 3, 3) float | cell vectors as rows (ASE convention), Angstrom; zeros for molecules
CELL = "_cell"
#: (n_graphs, 3) bool | periodic flags actually used to build the graph
PBC = "_pbc"
#: (n_atoms,) int64 | index of the structure each atom belongs to
BATCH = "_batch"
#: (n_graphs,) int64 | number of atoms per structure
N_ATOMS = "_n_atoms"
#: (2, n_edges) int64 | [centre i, neighbour j]
EDGE_INDEX = "_edge_index"
#: (n_edges, 3) float | Cartesian image shift added to positions[j], Angstrom
EDGE_SHIFT = "_edge_shift"
#: (n_edges,) int64 | structure each edge belongs to
EDGE_GRAPH = "_edge_graph"
#: (n_triplets,) int64 | first edge ``a`` of a triplet (index into edges)
TRIPLET_A = "_triplet_a"
#: (n_triplets,) int64 | second edge ``b`` of a triplet (index into edges)
TRIPLET_B = "_triplet_b"

# --- geometry, computed once per forward pass by etgnn.nn.geometry.edge_geometry ------------
#: (n_edges, 3) float | r_ij = positions[j] + _edge_shift - positions[i], Angstrom
EDGE_VECTOR = "_edge_vector"
#: (n_edges,) float | |r_ij|, Angstrom
EDGE_LENGTH = "_edge_length"
#: (n_edges, 3) float | r_ij / |r_ij|
EDGE_UNIT = "_edge_unit"
#: (n_edges,) float | smooth cutoff f(|r_ij|) of model.cutoff (1 at 0, 0 beyond)
EDGE_CUTOFF = "_edge_cutoff"
#: (n_edges,) float | smooth cutoff g(|r_ij|) of model.triplet_cutoff (0 beyond it)
EDGE_TRIPLET_CUTOFF = "_edge_triplet_cutoff"


#: what a field's ``level`` counts, and the symbol of that count in shapes
LEVELS = {"atom": "n_atoms", "edge": "n_edges", "triplet": "n_triplets", "structure": "n_graphs"}
#: where a field comes from: ``"graph"`` (a per-structure graph of build_graph, batched by
#: collate), ``"batch"`` (made by collate) or ``"geometry"`` (computed in the forward pass)
ORIGINS = ("graph", "batch", "geometry")


@dataclass(frozen=True)
class FieldSpec:
    """Declaration of one field.

    Attributes:
        name: key in the batch dictionary.
        level: ``"atom"``, ``"edge"``, ``"triplet"`` or ``"structure"`` (what the ``level`` axis counts).
        shape: symbolic shape, e.g. ``("n_atoms", 3)``; the axis named after ``level`` is the one
            along which structures are concatenated (stacked for ``"structure"``).
        dtype: ``"float"``, ``"int"`` or ``"bool"``.
        unit: physical unit, ``""`` if dimensionless.
        doc: one-line meaning.
        origin: one of :data:`ORIGINS`.
        index_of: ``"atom"`` or ``"edge"`` when the values index atoms or edges of their own
            structure (offset by the atoms / edges before it when batched), else None.
    """

    name: str
    level: str
    shape: tuple
    dtype: str = "float"
    unit: str = ""
    doc: str = ""
    origin: str = "graph"
    index_of: str | None = None

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"field {self.name!r}: level must be one of {sorted(LEVELS)}, got {self.level!r}")
        if self.origin not in ORIGINS:
            raise ValueError(f"field {self.name!r}: origin must be one of {ORIGINS}, got {self.origin!r}")
        if LEVELS[self.level] not in self.shape:
            raise ValueError(f"field {self.name!r}: shape {self.shape} has no {LEVELS[self.level]} axis")

    @property
    def axis(self) -> int:
        """The axis that runs over the ``level`` (atoms, edges, ...)."""
        return self.shape.index(LEVELS[self.level])


FIELDS: dict[str, FieldSpec] = {}


def register(spec: FieldSpec) -> str:
    """Add ``spec`` to :data:`FIELDS` and return its name (re-registering identically is a no-op).

    Raises:
        ValueError: if a different spec is already registered under the same name.
    """
    old = FIELDS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"field {spec.name!r} is already registered as {old}")
    FIELDS[spec.name] = spec
    return spec.name


def fields(origin: str | None = None, level: str | None = None) -> list[FieldSpec]:
    """The registered fields, optionally only those of one origin and / or level."""
    return [f for f in FIELDS.values() if (origin is None or f.origin == origin) and (level is None or f.level == level)]


for _spec in [
    FieldSpec(POSITIONS, "atom", ("n_atoms", 3), "float", "Angstrom", "Cartesian positions"),
    FieldSpec(NUMBERS, "atom", ("n_atoms",), "int", "", "atomic numbers"),
    FieldSpec(CELL, "structure", ("n_graphs", 3, 3), "float", "Angstrom", "cell vectors as rows"),
    FieldSpec(PBC, "structure", ("n_graphs", 3), "bool", "", "periodic flags"),
    FieldSpec(BATCH, "atom", ("n_atoms",), "int", "", "structure index of each atom", origin="batch"),
    FieldSpec(N_ATOMS, "structure", ("n_graphs",), "int", "", "atoms per structure", origin="batch"),
    FieldSpec(EDGE_INDEX, "edge", (2, "n_edges"), "int", "", "[centre, neighbour]", index_of="atom"),
    FieldSpec(EDGE_SHIFT, "edge", ("n_edges", 3), "float", "Angstrom", "image shift"),
    FieldSpec(EDGE_GRAPH, "edge", ("n_edges",), "int", "", "structure index of each edge", origin="batch"),
    FieldSpec(TRIPLET_A, "triplet", ("n_triplets",), "int", "", "first edge of a triplet", index_of="edge"),
    FieldSpec(TRIPLET_B, "triplet", ("n_triplets",), "int", "", "second edge of a triplet", index_of="edge"),
    FieldSpec(EDGE_VECTOR, "edge", ("n_edges", 3), "float", "Angstrom", "edge vector r_ij", origin="geometry"),
    FieldSpec(EDGE_LENGTH, "edge", ("n_edges",), "float", "Angstrom", "edge length", origin="geometry"),
    FieldSpec(EDGE_UNIT, "edge", ("n_edges", 3), "float", "", "unit edge vector", origin="geometry"),
    FieldSpec(EDGE_CUTOFF, "edge", ("n_edges",), "float", "", "edge cutoff f(r)", origin="geometry"),
    FieldSpec(EDGE_TRIPLET_CUTOFF, "edge", ("n_edges",), "float", "", "triplet cutoff g(r)", origin="geometry"),
]:
    register(_spec)
