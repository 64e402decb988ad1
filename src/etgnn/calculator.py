"""ASE calculator: use a trained etgnn model inside ASE (MD, relaxations with direct forces, analysis).

>>> import etgnn
>>> from ase.build import molecule
>>> model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1},
...                            "targets": {"mu": {"key": "mu", "level": "structure", "rank": 1,
...                                               "unit": "Debye"}}})
>>> atoms = molecule("H2O")
>>> atoms.calc = etgnn.ETGNNCalculator(model, aliases={"mu": "dipole"})
>>> atoms.get_dipole_moment().shape          # e*Angstrom, converted from the target's Debye
(3,)
"""

from __future__ import annotations

import os

import numpy as np
from ase import units as U
from ase.calculators.calculator import Calculator, all_changes

from .errors import ConfigError
from .model import ETGNN, load_model

__all__ = ["ETGNNCalculator", "ASE_PROPERTIES", "unit_factor"]

_EV_PER_A = {"eV/Angstrom": 1.0, "Hartree/Bohr": U.Hartree / U.Bohr, "au": U.Hartree / U.Bohr,
             "Ry/Bohr": U.Rydberg / U.Bohr, "kcal/mol/Angstrom": U.kcal / U.mol, "kJ/mol/Angstrom": U.kJ / U.mol}
_EV = {"eV": 1.0, "Hartree": U.Hartree, "au": U.Hartree, "Ry": U.Rydberg, "kcal/mol": U.kcal / U.mol,
       "kJ/mol": U.kJ / U.mol}

#: ASE property -> (level, rank, ASE's unit, {declared unit: factor to ASE's unit}); declared units
#: match ignoring case and spaces ("e*Angstrom" = "e * angstrom"; "Å" = "Angstrom")
ASE_PROPERTIES: dict[str, tuple[str, int, str, dict[str, float]]] = {
    "energy": ("structure", 0, "eV", _EV),
    "free_energy": ("structure", 0, "eV", _EV),
    "forces": ("atom", 1, "eV/Angstrom", _EV_PER_A),
    "dipole": ("structure", 1, "e*Angstrom", {"e*Angstrom": 1.0, "Debye": U.Debye, "e*bohr": U.Bohr, "au": U.Bohr}),
    "charges": ("atom", 0, "e", {"e": 1.0}),
    "magmoms": ("atom", 0, "mu_B", {"mu_B": 1.0}),
    "stress": ("structure", 2, "eV/Angstrom^3", {"eV/Angstrom^3": 1.0, "GPa": U.GPa}),
}


def _norm(unit: str) -> str:
    return unit.replace(" ", "").replace("Å", "Angstrom").replace("·", "*").replace("a.u.", "au").lower()


def unit_factor(prop: str, unit: str, target: str) -> float:
    """Factor that turns values of ``target`` in ``unit`` into ASE's unit of ``prop``.

    Raises:
        ConfigError: ``unit`` is empty or unknown for ``prop``; the message says how to declare it.
    """
    _, _, ase_unit, table = ASE_PROPERTIES[prop]
    known = ", ".join(table)
    how = (f"declare it in the training config (targets.{target}.unit: one of {known}) or pass "
           f"units={{{target!r}: ...}} to ETGNNCalculator")
    if not unit:
        raise ConfigError(f"target {target!r} declares no unit, so it cannot be served as ASE's {prop!r} "
                          f"({ase_unit}); {how}")
    factor = {_norm(k): v for k, v in table.items()}.get(_norm(unit))
    if factor is None:
        raise ConfigError(f"target {target!r} has unit {unit!r}, which etgnn cannot convert to ASE's {prop!r} "
                          f"({ase_unit}); {how}")
    return float(factor)


class ETGNNCalculator(Calculator):
    """Expose every target of an etgnn model as an ASE calculator property.

    Each target is available as ``calc.results[<target name>]`` (shapes as in
    :meth:`etgnn.model.ETGNN.predict`, units of the training data), so
    ``atoms.calc.get_property("born_charges", atoms)`` works for any target.  Targets named like
    ASE's standard properties (``energy``, ``forces``, ``dipole``, ``stress``, ``charges``,
    ``magmoms``) and targets mapped onto them by ``aliases`` (e.g. ``{"mu": "dipole"}``) also
    serve ``atoms.get_forces()``, ``atoms.get_dipole_moment()`` etc., converted from the target's
    declared ``unit`` to ASE's (eV, eV/Angstrom, e*Angstrom, eV/Angstrom^3, e, mu_B).  An alias
    needs a unit etgnn knows (:data:`ASE_PROPERTIES`); a target named like an ASE property with no
    declared unit is served unchanged (taken to be in ASE's units already).

    A model with uncertainty (``etgnn calibrate``) also serves ``<target>_std`` (and
    ``<ASE property>_std``, converted alike): one standard deviation per component, the target's
    shape, e.g. ``calc.get_property("born_charges_std", atoms)``; it is computed only when such a
    property is asked for (it costs about one more forward pass per target).

    Forces come from a direct rank-1 head (as in the ETGNN paper), not from an energy gradient:
    they are exactly equivariant, but not conservative.

    Args:
        model: a model or the path of a saved model / checkpoint.
        aliases: ``{target name: ASE property name}``.
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``.
        units: ``{target name: unit}``, overriding the units declared in the model's config (for
            checkpoints trained without ``unit``).

    Raises:
        ConfigError: an alias onto an unknown property, onto one whose level / rank differs from
            the target's, or from a target whose unit is missing or unknown.
    """

    def __init__(self, model: ETGNN | str | os.PathLike, aliases: dict[str, str] | None = None,
                 device: str = "cpu", units: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = (model if isinstance(model, ETGNN) else load_model(model, map_location=device)).to(device)
        self.aliases = dict(aliases or {})
        targets = self.model.targets  # {name: Target}
        for name in list(self.aliases) + list(units or {}):
            if name not in targets:
                raise ConfigError(f"ETGNNCalculator: the model has no target {name!r}; "
                                  f"its targets: {', '.join(targets)}")
        #: target name -> (ASE property, factor from the target's unit to ASE's)
        self.conversions: dict[str, tuple[str, float]] = {}
        for name, t in targets.items():
            prop = self.aliases.get(name, name if name in ASE_PROPERTIES else None)
            if prop is None:
                continue
            if prop not in ASE_PROPERTIES:
                raise ConfigError(f"ETGNNCalculator: alias {name!r} -> {prop!r}: not an ASE property etgnn serves "
                                  f"(one of {', '.join(ASE_PROPERTIES)})")
            level, rank, _, _ = ASE_PROPERTIES[prop]
            if (t.level, t.rank) != (level, rank):
                raise ConfigError(f"ETGNNCalculator: target {name!r} ({t.level}, rank {t.rank}) cannot serve ASE's "
                                  f"{prop!r} ({level}, rank {rank})")
            unit = (units or {}).get(name, t.unit)
            factor = 1.0 if (name == prop and not unit) else unit_factor(prop, unit, name)
            self.conversions[name] = (prop, factor)
        props = [p for p, _ in self.conversions.values()]
        self.implemented_properties = list(dict.fromkeys(list(targets) + props))
        llpr = self.model.uncertainty
        if llpr is not None:
            self.implemented_properties += [f"{name}_std" for name in llpr.targets]
            self.implemented_properties += [f"{prop}_std" for name, (prop, _) in self.conversions.items()
                                            if name in llpr.targets and prop != name]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from .predict import Predictor

        super().calculate(atoms, properties, system_changes)
        std = self.model.uncertainty is not None and any(str(p).endswith("_std") for p in properties)
        pred = Predictor(self.model, batch_size=1, background=False, uncertainty=std).predict(self.atoms)[0]
        self.results = {name: np.asarray(value) for name, value in pred.items()}
        for name, (prop, factor) in self.conversions.items():
            self.results[prop] = self.results[name] * factor
            if f"{name}_std" in self.results:
                self.results[f"{prop}_std"] = self.results[f"{name}_std"] * factor
        for prop in ("energy", "free_energy"):
            if prop in self.results:
                self.results[prop] = float(self.results[prop])
