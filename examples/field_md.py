"""MD of NaCl under a static electric field, on DFT harmonic force constants (a few seconds).

Forces: phonopy force constants of a 64-atom NaCl supercell (``HarmonicCalculator``). Field force
``F_k = q Z_k^T E`` with the DFT Born charges (``FieldCalculator``), or with the Born charges a
model predicts at every step (``--checkpoint``, a model with a per-atom rank-2 target trained on
crystals, e.g. examples/phonondb_bec_eps.yaml). Langevin MD at 50 K with E_z = 0.05 V/Angstrom
switched on at t = 0; the time-averaged polarization change gives eps_0 - eps_inf, printed next to
the exact static response of the same harmonic crystal.

    python examples/field_md.py [--data ../shared/data/phonopy_born] [--checkpoint best.ckpt]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from ase import units
from ase.md.langevin import Langevin

from etgnn.observables.field import FieldCalculator
from etgnn.observables.harmonic import (EPS0_FACTOR, HarmonicCalculator, load_phonopy_crystal,
                                        static_dielectric_ionic)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "phonopy_born"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder with NaCl.phonopy_disp.yaml, FORCE_SETS, BORN")
    ap.add_argument("--checkpoint", default=None, help="predict the Born charges with this model")
    ap.add_argument("--field", type=float, default=0.05, help="E_z in V/Angstrom")
    ap.add_argument("--temperature", type=float, default=50.0, help="K")
    ap.add_argument("--steps", type=int, default=2000, help="MD steps of 4 fs")
    args = ap.parse_args(argv)
    files = [args.data / f"NaCl.{ext}" for ext in ("phonopy_disp.yaml", "FORCE_SETS", "BORN")]
    if not all(f.is_file() for f in files):
        print(f"NaCl phonopy files not found in {args.data}: give --data", file=sys.stderr)
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crystal = load_phonopy_crystal(*files)

    atoms = crystal.atoms.copy()
    born = args.checkpoint or crystal.born
    calc = FieldCalculator(HarmonicCalculator(crystal.force_constants, crystal.atoms), [0, 0, args.field], born)
    atoms.calc = calc
    md = Langevin(atoms, timestep=4 * units.fs, temperature_K=args.temperature, friction=0.02, fixcm=False,
                  rng=np.random.default_rng(0))
    p_z = []
    md.attach(lambda: p_z.append(calc.get_property("polarization_change", atoms)[2]))
    md.run(args.steps)
    p_z = np.array(p_z)
    late = p_z[len(p_z) // 4:]  # after the first quarter (the ions have settled around the new minimum)
    d_eps_md = EPS0_FACTOR * late.mean() / args.field
    err = EPS0_FACTOR * late.std() / args.field / np.sqrt(len(late) / 50)  # ~50-step correlation time
    exact = static_dielectric_ionic(crystal.force_constants, crystal.born, crystal.atoms.get_volume())[2, 2]
    print(f"E_z = {args.field} V/Angstrom, {args.steps} steps of 4 fs at {args.temperature} K "
          f"({'predicted' if args.checkpoint else 'DFT'} Born charges)")
    print(f"polarization change P_z = {late.mean():.3e} e/Angstrom^2 "
          f"(first frames {p_z[:3].round(6).tolist()} ...)")
    print(f"eps_0 - eps_inf from MD: {d_eps_md:.2f} +- {err:.2f}; exact static response (DFT charges): {exact:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
