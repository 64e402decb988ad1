"""ASE calculator: use a trained etgnn model inside ASE (MD, relaxations with direct forces, analysis).

>>> import etgnn
>>> from ase.build import molecule
>>> model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1},
...                            "targets": {"dipole": {"key": "dipole", "level": "structure", "rank": 1}}})
>>> atoms = molecule("H2O")
>>> atoms.calc = ETGNNCalculator(model)
>>> atoms.get_dipole_moment().shape
(3,)
"""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .model import ETGNN, load_model

__all__ = ["ETGNNCalculator"]


class ETGNNCalculator(Calculator):
    """Expose every target of an etgnn model as an ASE calculator property.

    Each target is available as ``calc.results[<target name>]`` (shapes as in
    :meth:`etgnn.model.ETGNN.predict`, units of the training data), so
    ``atoms.calc.get_property("born_charges", atoms)`` works for any target.  Targets named like
    ASE's standard properties (``forces``, ``energy``, ``dipole``, ``stress``, ``charges``,
    ``magmoms``) also serve ``atoms.get_forces()`` etc.; ``aliases`` maps other target names onto
    those, e.g. ``{"mu": "dipole"}``.

    Forces come from a direct rank-1 head (as in the ETGNN paper), not from an energy gradient:
    they are exactly equivariant, but not conservative.

    Args:
        model: a model or the path of a saved model / checkpoint.
        aliases: ``{target name: ASE property name}``.
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, model: ETGNN | str | os.PathLike, aliases: dict[str, str] | None = None,
                 device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.model = (model if isinstance(model, ETGNN) else load_model(model, map_location=device)).to(device)
        self.aliases = dict(aliases or {})
        names = list(self.model.heads)
        self.implemented_properties = names + [self.aliases[n] for n in names if n in self.aliases]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pred = self.model.predict(self.atoms)[0]
        self.results = {}
        for name, value in pred.items():
            value = np.asarray(value)
            self.results[name] = value
            if name in self.aliases:
                self.results[self.aliases[name]] = value
        if "energy" in self.results:
            self.results["energy"] = float(self.results["energy"])
