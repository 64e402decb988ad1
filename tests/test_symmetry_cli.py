"""Table S1 of the paper: random-weight models give zero forces on every atom of graphene, h-BN
and diamond; and the ``etgnn symmetry-test`` command that prints the table."""

from __future__ import annotations

import argparse
import doctest

import numpy as np
import pytest

from etgnn import symmetry as S
from etgnn.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_VARIANTS = S.VARIANTS[1:]  # every activation, cutoff function and radial basis, small widths


def test_table_s1_forces_vanish(dtype):
    tol = S.DEFAULT_TOLERANCE[dtype]
    rows = S.symmetry_test(seeds=(0, 1), variants=SMALL_VARIANTS, dtype=dtype)
    assert len(rows) == 2 * len(SMALL_VARIANTS) * 3
    assert {r.structure for r in rows} == {"graphene", "h-BN", "diamond"}
    for row in rows:
        what = f"{row.structure} {row.variant} seed {row.seed}"
        assert len(row.forces) == len(row.terms) == 2, what
        assert min(row.terms) > 1e-4, f"{what}: the edge terms themselves are ~0, the test would be void"
        assert row.rattled > 10 * row.max_force, f"{what}: the rattled structure has no larger force"
        assert row.ratio < tol, f"{what}: |F| / sum|terms| = {row.ratio:.2e} >= {tol:.0e}"
    assert {r.sites for r in rows if r.structure == "h-BN"} == {("B0", "N1")}


def test_broken_symmetry_gives_a_large_ratio(dtype):
    """Once the atoms are moved the same measure is many orders above the tolerance."""
    graphene = S.table_s1_structures()["graphene"]
    graphene.positions[0] += [0.1, 0.0, 0.05]
    (row,) = S.symmetry_test(seeds=(0,), variants=SMALL_VARIANTS[:1], dtype=dtype,
                             structures={"distorted graphene": graphene})
    assert row.ratio > 100 * S.DEFAULT_TOLERANCE[dtype], row


def test_term_magnitude_is_exact_for_a_dimer():
    """Each atom of a dimer has one edge, so |F| equals the magnitude of its only term."""
    from ase import Atoms

    dimer = Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.3, -0.2, 1.1]])
    (row,) = S.symmetry_test(seeds=(3,), variants=SMALL_VARIANTS[:1], structures={"CO": dimer})
    np.testing.assert_allclose(row.ratios, 1.0, rtol=1e-12)
    assert min(row.forces) > 1e-6


def test_structures_are_the_ideal_ones():
    structures = S.table_s1_structures()
    assert [s.get_chemical_formula() for s in structures.values()] == ["C2", "BN", "C2"]
    for name in ("graphene", "h-BN"):
        atoms = structures[name]
        assert list(atoms.pbc) == [True, True, False] and np.ptp(atoms.positions[:, 2]) == 0
    assert structures["diamond"].pbc.all()


def test_command_prints_the_table_and_passes(capsys):
    assert main(["symmetry-test", "--seeds", "1"]) == 0  # includes the paper-default model
    out = capsys.readouterr().out
    for text in ("structure", "site", "|F|", "sum|terms|", "ratio", "graphene", "h-BN", "diamond",
                 "B0", "N1", "paper defaults", "PASS"):
        assert text in out, f"{text!r} missing from the table"
    lines = [line for line in out.splitlines() if line.startswith(("graphene", "h-BN", "diamond"))]
    assert len(lines) == len(S.VARIANTS) * 3 * 2  # one line per atom


@pytest.mark.parametrize(("argv", "code", "verdict"), [
    (["--dtype", "float32"], 0, "PASS"),
    (["--tolerance", "1e-30"], 1, "FAIL"),
])
def test_command_exit_code(monkeypatch, capsys, argv, code, verdict):
    monkeypatch.setattr(S, "VARIANTS", SMALL_VARIANTS[:1])
    assert main(["symmetry-test", "--seeds", "1", *argv]) == code
    assert verdict in capsys.readouterr().out


def test_command_rejects_bad_arguments(capsys):
    parser = argparse.ArgumentParser(prog="etgnn")
    S.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["symmetry-test", "--seeds", "0"])
    assert exc.value.code == 2
    assert "must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["symmetry-test", "--dtype", "float16"])


def test_doctests():
    result = doctest.testmod(S, verbose=False)
    assert result.attempted > 0 and result.failed == 0
