"""Uniform electric field on top of any ASE force calculator, through Born effective charges.

The field force on atom ``k`` is ``F_{k,j} = q sum_i E_i Z[k, i, j]`` (``F_k = q Z_k^T E``) with
``Z[k, i, j] = (Omega/e) dP_i/du_{k,j} = dF_{k,j}/dE_i`` (docs/conventions.md), ``E`` in
V/Angstrom, ``q = 1 e``, so forces come out in eV/Angstrom.  The calculator integrates the dipole
change along the path of the structures it is called on, ``d mu = sum_k Z_k du_k`` (trapezoidal in
``Z`` between calls; exact for fixed charges), and reports it as ``dipole_change`` (e Angstrom) and
``polarization_change`` = ``dipole_change / V`` (e/Angstrom^2, crystals).  The energy is the base
energy plus the field enthalpy ``-E . dipole_change`` (eV), conserved by MD with fixed charges.

>>> import numpy as np
>>> from ase import Atoms
>>> from ase.calculators.calculator import Calculator
>>> class Zero(Calculator):
...     implemented_properties = ["energy", "forces"]
...     def calculate(self, atoms=None, properties=None, system_changes=None):
...         super().calculate(atoms, properties, system_changes)
...         self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}
>>> atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]])
>>> z = np.array([np.eye(3), -np.eye(3)])  # rigid ions +1, -1
>>> atoms.calc = FieldCalculator(Zero(), [0.0, 0.0, 0.1], born=z)
>>> atoms.get_forces()[:, 2]
array([ 0.1, -0.1])
"""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import ConfigError, DataError

__all__ = ["FieldCalculator", "field_forces"]


def field_forces(born, field, charge: float = 1.0) -> np.ndarray:
    """``F[k, j] = q sum_i E_i Z[k, i, j]``.

    Args:
        born: (n_atoms, 3, 3) Born charges in e.  field: (3,) V/Angstrom.  charge: q in e.

    Returns:
        (n_atoms, 3) eV/Angstrom.
    """
    return charge * np.einsum("i,kij->kj", np.asarray(field, dtype=float), np.asarray(born, dtype=float))


class FieldCalculator(Calculator):
    """Add the force of a uniform field ``E`` to the forces of ``calc``.

    Args:
        calc: any ASE calculator giving ``forces`` (and optionally ``energy``).
        field: (3,) electric field in V/Angstrom.
        born: (n_atoms, 3, 3) fixed Born charges in e, or an etgnn model / checkpoint path whose
            per-atom rank-2 target ``born_target`` is predicted at every step.
        born_target: target name (default: the model's only per-atom rank-2 target).
        charge: q in e (1 for the electron charge convention of the Born charges).
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole_change", "polarization_change",
                              "born_effective_charges"]

    def __init__(self, calc: Calculator, field, born, born_target: str | None = None,
                 charge: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.calc = calc
        self.field = np.asarray(field, dtype=float)
        if self.field.shape != (3,):
            raise ConfigError(f"the electric field must be 3 numbers (V/Angstrom), got shape {self.field.shape}")
        self.charge = float(charge)
        self.model = None
        if isinstance(born, (str, os.PathLike)) or hasattr(born, "predict"):
            from ..model import load_model
            from .timeseries import select_target

            self.model = born if hasattr(born, "predict") else load_model(born)
            self.born_target = select_target(self.model, born_target, "atom", 2, "Born charges")
            self.fixed_born = None
        else:
            self.fixed_born = np.asarray(born, dtype=float)
            if self.fixed_born.ndim != 3 or self.fixed_born.shape[1:] != (3, 3):
                raise DataError(f"fixed Born charges must have shape (n_atoms, 3, 3), got {self.fixed_born.shape}")
        self._last = None  # (positions, born) of the previous call
        self.dipole_change = np.zeros(3)

    def reset_dipole(self) -> None:
        """Start integrating the dipole change afresh at the next structure."""
        self._last = None
        self.dipole_change = np.zeros(3)

    def born_charges(self, atoms) -> np.ndarray:
        """(n_atoms, 3, 3) Born charges at ``atoms`` (fixed, or predicted by the model)."""
        if self.model is None:
            if len(self.fixed_born) != len(atoms):
                raise DataError(f"{len(self.fixed_born)} fixed Born charges for a structure of {len(atoms)} atoms")
            return self.fixed_born
        return np.asarray(self.model.predict(atoms)[0][self.born_target], dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from .harmonic import displacements

        born = self.born_charges(self.atoms)
        if self._last is not None:
            du = displacements(self.atoms, self._last[0])
            self.dipole_change = self.dipole_change + np.einsum("kij,kj->i", 0.5 * (born + self._last[1]), du)
        self._last = (self.atoms.copy(), born)
        forces = np.asarray(self.calc.get_forces(self.atoms), dtype=float) + field_forces(born, self.field,
                                                                                          self.charge)
        enthalpy = -self.charge * float(self.field @ self.dipole_change)
        energy = None
        if "energy" in getattr(self.calc, "implemented_properties", ()):
            energy = float(self.calc.get_potential_energy(self.atoms)) + enthalpy
        volume = self.atoms.get_volume() if self.atoms.cell.rank == 3 else None
        self.results = {"forces": forces, "dipole_change": self.dipole_change.copy(),
                        "born_effective_charges": born}
        if volume:
            self.results["polarization_change"] = self.dipole_change / volume
        if energy is not None:
            self.results.update(energy=energy, free_energy=energy)
