"""Quantum-chemistry labels for small molecules (PySCF, optional extra ``etgnn[qm]``).

PySCF is imported lazily inside the functions that need it, so importing this package works
without it; calling them without PySCF raises :class:`etgnn.errors.EtgnnError`.
"""

from etgnn.qm.labels import (
    BOHR_ANGSTROM,
    DEFAULT_BASIS,
    DEFAULT_FIELD_AU,
    DEFAULT_METHOD,
    HARTREE_EV,
    METHODS,
    Labels,
    SinglePoint,
    compute_labels,
    single_point,
)
from etgnn.qm.make_dataset import UNITS, add_parser, make_dataset, read_done
from etgnn.qm.molecules import (
    MOLECULES,
    SampleSpec,
    random_rotation,
    reference_geometry,
    sample_geometry,
    sample_plan,
)

__all__ = [
    "BOHR_ANGSTROM",
    "DEFAULT_BASIS",
    "DEFAULT_FIELD_AU",
    "DEFAULT_METHOD",
    "HARTREE_EV",
    "METHODS",
    "MOLECULES",
    "UNITS",
    "Labels",
    "SampleSpec",
    "SinglePoint",
    "add_parser",
    "compute_labels",
    "make_dataset",
    "random_rotation",
    "read_done",
    "reference_geometry",
    "sample_geometry",
    "sample_plan",
    "single_point",
]
