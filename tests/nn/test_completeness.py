"""Completeness of the tensor expansion: every component a site's symmetry allows, and no other.

For a site (or a whole structure) with symmetry group G, the rank-M tensors it may carry form the
G-invariant subspace of V^(x)M (dimension: :func:`etgnn.testing.allowed_dimension`, from the group
average of R^(x)M).  The tensors a head produces there, sampled over random head weights
(:func:`etgnn.testing.sample_head_outputs`), must span exactly that subspace: equivariance makes
them lie inside it (checked too), completeness makes them fill it.  Without the mixed
(edge x delta) terms a planar or linear site misses components from rank 3 on (e.g. beta_xxz of
H2O in the yz plane, beta_xxz of HCN along z); without the chiral term a site with no mirror or
inversion misses epsilon_ijk at rank 3.

Catalogue: molecular C2v, C3v, D3h, Td, D6h, C_inf_v, D_inf_h; and for each of the 32
crystallographic point groups a crystal whose atom 0 has that site group (checked with spglib).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import spglib
from ase.build import molecule

import etgnn
from etgnn import testing

pytestmark = pytest.mark.usefixtures("single_thread")

RANKS = (1, 2, 3, 4)

#: A direction counts as spanned above this fraction of the O(1) output scale.  Forbidden
#: components are round-off (below 1e-14, checked by the leak test in ``dimensions``); on sites
#: where a component needs the four-body asymmetry between symmetry-equivalent edges (rotation
#: axes without perpendicular mirrors) the weakest allowed direction of a random model is
#: 1e-8 - 1e-5 of that scale: in the span, weakly (docs/model.md, "Completeness").
SPAN_RTOL = 1e-10

#: small float64 model: one per-atom and one per-structure head per rank
MODEL = {"hidden_channels": 16, "triplet_channels": 16, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
         "num_spherical": 4, "cutoff": 3.5, "triplet_cutoff": 3.0, "dtype": "float64", "seed": 1}


@functools.lru_cache(maxsize=None)
def model(mixed: bool = True, chiral: bool = True, four_body: bool = True, symmetry: tuple = ()) -> etgnn.ETGNN:
    targets = {}
    for rank in RANKS:
        for level in ("atom", "structure"):
            targets[f"{level}{rank}"] = {"key": f"{level}{rank}", "level": level, "rank": rank,
                                         "mixed": mixed, "chiral": chiral, "four_body": four_body}
    for name, rank, formula in symmetry:
        targets[name] = {"key": name, "level": "structure", "rank": rank, "symmetry": formula}
    return etgnn.build_model({"model": MODEL, "targets": targets}).eval()


def dimensions(m, atoms, target, cases, symmetry=None):
    """(allowed, spanned) dimensions for each ``(rotations, row)`` of ``cases``: the site group of
    atom ``row`` (per-atom targets) or the point group (structure targets, row 0).

    Asserts that no sample leaves the allowed subspace (equivariance) before counting the span.
    """
    projectors = [testing.invariant_projector(ops, m.heads[target].rank, symmetry) for ops, _ in cases]
    allowed = [testing.numerical_rank(p, 1e-9, 1.0) for p in projectors]
    samples, scale = testing.sample_head_outputs(m, atoms, target, n_samples=max(allowed) + 10)
    out = []
    for proj, dim, (_, row) in zip(projectors, allowed, cases):
        s = samples[:, row]
        leak = np.abs(s - s @ proj.T).max()
        assert leak <= 1e-13 * scale, f"{target} row {row}: a sample leaves the allowed subspace ({leak:.1e})"
        out.append((dim, testing.numerical_rank(s, SPAN_RTOL, scale)))
    return out


MOLECULES = {"H2O": ("C2v", 0), "NH3": ("C3v", 0), "BF3": ("D3h", 0), "CH4": ("Td", 0), "C6H6": ("D6h", None),
             "HCN": ("C_inf_v", 1), "CO2": ("D_inf_h", 0)}


@pytest.mark.parametrize("name", list(MOLECULES))
def test_molecules_complete(name):
    """Central atom (site group = molecular group) and the molecule's own tensor, ranks 1-4."""
    atoms, ops = testing.molecule_rotations(molecule(name))
    m = model()
    _, centre = MOLECULES[name]
    for rank in RANKS:
        for level in ("atom", "structure"):
            if level == "atom" and centre is None:
                continue
            [(allowed, spanned)] = dimensions(m, atoms, f"{level}{rank}", [(ops, centre if level == "atom" else 0)])
            assert spanned == allowed, f"{name} {level} rank {rank}: spans {spanned} of {allowed} allowed"


@pytest.mark.parametrize("name, rank", [("H2O", 3), ("HCN", 3), ("H2O", 4), ("BF3", 4), ("C6H6", 4)])
def test_without_mixed_terms_components_are_missing(name, rank):
    """The defect the mixed terms fix: planar and linear sites miss allowed components."""
    atoms, ops = testing.molecule_rotations(molecule(name))
    [(allowed, spanned)] = dimensions(model(mixed=False, chiral=False), atoms, f"structure{rank}", [(ops, 0)])
    assert spanned < allowed


def test_water_beta_out_of_plane_component():
    """beta_xxz of H2O in the yz plane (allowed by C2v, large in real water) is produced."""
    atoms = molecule("H2O")
    before = testing.sample_head_outputs(model(mixed=False, chiral=False), atoms, "structure3")[0].reshape(-1, 3, 3, 3)
    after = testing.sample_head_outputs(model(), atoms, "structure3")[0].reshape(-1, 3, 3, 3)
    assert np.abs(before[:, 0, 0, 2]).max() == 0.0
    assert np.abs(after[:, 0, 0, 2]).max() > 1e-3 * np.abs(after).max()


@pytest.mark.parametrize("point_group", list(testing.SYMMORPHIC_GROUPS))
def test_crystal_sites_complete(point_group):
    """All 32 point groups: atom 0 (site group = point group), an atom in general position (site
    group 1) and the crystal tensor (point group), ranks 1-4."""
    atoms = testing.point_group_crystal(point_group)
    data = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=1e-4)
    assert data.pointgroup == point_group
    assert data.site_symmetry_symbols[0].replace(".", "") == point_group.replace(".", "")
    m = model()
    site = testing.site_rotations(atoms, 0)
    general = testing.site_rotations(atoms, 1)
    crystal = testing.point_group_rotations(atoms)
    assert len(site) == len(crystal) and len(general) == 1
    for rank in RANKS:
        # the general position (site group 1, all 3**M components) at ranks 3-4 only where cheap
        cases = [(site, 0), (general, 1)] if rank < 3 or len(atoms) <= 25 else [(site, 0)]
        for (allowed, spanned), (_, row) in zip(dimensions(m, atoms, f"atom{rank}", cases), cases):
            assert spanned == allowed, f"{point_group} atom {row} rank {rank}: spans {spanned} of {allowed}"
        [(allowed, spanned)] = dimensions(m, atoms, f"structure{rank}", [(crystal, 0)])
        assert spanned == allowed, f"{point_group} crystal rank {rank}: spans {spanned} of {allowed}"


@pytest.mark.parametrize("point_group", ["23", "432", "622", "32", "1"])
def test_chiral_sites_need_the_chiral_term(point_group):
    """Without the pseudoscalar term, rank-3 epsilon_ijk is missing on sites without improper operations."""
    atoms = testing.point_group_crystal(point_group)
    [(allowed, spanned)] = dimensions(model(chiral=False), atoms, "atom3", [(testing.site_rotations(atoms, 0), 0)])
    assert spanned == allowed - 1


@pytest.mark.parametrize("name, rank, formula", [("eps", 2, "ij=ji"), ("piezo", 3, "ijk=ikj"),
                                                 ("elastic", 4, "ijkl=jikl=ijlk=klij")])
@pytest.mark.parametrize("point_group", ["6mm", "-42m", "3m", "mm2", "-6m2"])
def test_index_symmetric_targets_complete(point_group, name, rank, formula):
    """Structure targets with index symmetry span the point group's allowed Voigt components."""
    atoms = testing.point_group_crystal(point_group)
    m = model(symmetry=((name, rank, formula),))
    [(allowed, spanned)] = dimensions(m, atoms, name, [(testing.point_group_rotations(atoms), 0)], formula)
    assert spanned == allowed
