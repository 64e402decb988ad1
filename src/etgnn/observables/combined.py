"""One ASE calculator serving each property from a different calculator (forces from one, dipole from another).

ASE's ``ase.vibrations.Infrared`` calls ``get_forces`` and ``get_dipole_moment`` on the *same*
calculator.  ``ase.calculators.mixing.SumCalculator`` / ``LinearCombinationCalculator`` do not fit:
they offer only the properties that *every* calculator implements (EMT has no dipole, a dipole
model no forces) and they add the values instead of routing them.  :func:`combine` routes::

    from ase.vibrations import Infrared
    atoms.calc = combine(EMT(), ETGNNCalculator("best.ckpt"), dipole="dipole")
    ir = Infrared(atoms); ir.run(); ir.summary()
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..errors import ConfigError

__all__ = ["CombinedCalculator", "combine"]


class CombinedCalculator(Calculator):
    """Route each ASE property to one calculator.

    Args:
        routes: ``{property: (calculator, name in that calculator)}``, e.g.
            ``{"forces": (emt, "forces"), "dipole": (model_calc, "mu")}``.
    """

    def __init__(self, routes: dict, **kwargs):
        super().__init__(**kwargs)
        if not routes:
            raise ConfigError("CombinedCalculator needs at least one property route")
        self.routes = {}
        for prop, (calc, name) in routes.items():
            offered = getattr(calc, "implemented_properties", ())
            if name not in offered:
                raise ConfigError(f"{type(calc).__name__} does not offer {name!r} (asked for as {prop!r}); "
                                  f"it offers: {', '.join(offered)}")
            self.routes[prop] = (calc, name)
        self.implemented_properties = list(self.routes)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)  # results were reset if the atoms changed
        for prop in properties:
            if prop not in self.routes:
                raise PropertyNotImplementedError(f"{prop!r} is not routed; routed: {', '.join(self.routes)}")
            calc, name = self.routes[prop]
            value = calc.get_property(name, self.atoms)
            self.results[prop] = value.copy() if isinstance(value, np.ndarray) else value


def combine(force_calc: Calculator, dipole_calc: Calculator, dipole: str = "dipole") -> CombinedCalculator:
    """Energy, forces (and stress, if offered) from ``force_calc``; ``dipole`` from ``dipole_calc``.

    Args:
        force_calc: any ASE calculator with forces (EMT, a harmonic one, a force-field model).
        dipole_calc: e.g. :class:`etgnn.calculator.ETGNNCalculator` of a dipole model.
        dipole: the name of the dipole property in ``dipole_calc`` (an etgnn target name), in
            e Angstrom (ASE's unit of ``get_dipole_moment``).
    """
    routes = {p: (force_calc, p) for p in ("energy", "free_energy", "forces", "stress")
              if p in getattr(force_calc, "implemented_properties", ())}
    routes["dipole"] = (dipole_calc, dipole)
    return CombinedCalculator(routes)
