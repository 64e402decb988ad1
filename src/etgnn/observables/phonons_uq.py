"""Gamma phonons +- one sigma: the LO-TO splitting, eps_0 and IR strengths of posterior samples.

A model with uncertainty (``etgnn calibrate``, docs/uncertainty.md) gives a Gaussian posterior
over its last-layer weights.  :func:`sample_gamma_modes` draws ``N`` weight samples
(:func:`etgnn.uncertainty.sampling.posterior_samples`), so each sample is a whole model: its Born
charges and eps_inf keep every correlation between components and atoms, and they obey the
acoustic sum rule and the site symmetry as the model does; each sample is then symmetrised by
phonopy as the plain prediction is (:func:`etgnn.observables.phonons.nac_params`, a linear
projection that makes both exact) and goes through the same Gamma-mode calculation.  The spread
of the outputs over the samples is their uncertainty: TO frequencies (no NAC) do not depend on the
Born charges and have none; LO frequencies, eps_0 and the IR strengths do.

Frequencies are matched between samples by their order (ascending, as phonopy gives them); IR
intensities of a degenerate set are those of the modes aligned by
:func:`etgnn.observables.phonons.align_degenerate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .born import select_born_targets, to_ase_atoms

__all__ = ["GammaSamples", "sample_gamma_modes", "format_uncertainty"]


@dataclass
class GammaSamples:
    """Outputs of each posterior sample (first axis: sample).

    Attributes:
        born: (S, n_atoms, 3, 3) symmetrised Born charges, e.
        epsilon_inf: (S, 3, 3) symmetrised eps_inf.
        frequencies: (S, n_modes) THz, no NAC.
        nac_frequencies: (S, n_modes) THz, with the NAC along ``direction``.
        intensities: (S, n_modes) IR intensities tr S_m of the modes without NAC, e^2/amu.
        nac_intensities: (S, n_modes) ``|p_m|^2`` of the modes with NAC, e^2/amu.
        strengths: (S, n_modes, 3, 3) oscillator strengths, e^2/amu.
        epsilon_static: (S, 3, 3) eps_0.
        dropped: samples left out because their eps_inf was not positive definite.
        source: what the samples are (``"32 posterior samples of the model (LLPR)"``, or a deep
            ensemble's members; :func:`etgnn.uncertainty.sampling.describe_samples`).
    """

    born: np.ndarray
    epsilon_inf: np.ndarray
    frequencies: np.ndarray
    nac_frequencies: np.ndarray
    intensities: np.ndarray
    nac_intensities: np.ndarray
    strengths: np.ndarray
    epsilon_static: np.ndarray
    dropped: int = 0
    source: str = "posterior samples of the model (LLPR)"

    @property
    def n_samples(self) -> int:
        return int(self.born.shape[0])

    def std(self, name: str) -> np.ndarray:
        """Sample standard deviation of an attribute (ddof=1; 0 with one sample)."""
        value = getattr(self, name)
        return value.std(axis=0, ddof=1) if value.shape[0] > 1 else np.zeros(value.shape[1:])

    def mean(self, name: str) -> np.ndarray:
        return getattr(self, name).mean(axis=0)


def sample_gamma_modes(phonon, model, n_samples: int, direction=(1.0, 0.0, 0.0), *, seed: int = 0,
                       bec_target: str | None = None, eps_target: str | None = None, symprec: float = 1e-5,
                       source: str = "the model") -> GammaSamples:
    """Gamma modes of ``n_samples`` posterior samples of the model's Born charges and eps_inf.

    Args:
        phonon: a ``Phonopy`` with force constants; its NAC parameters are restored afterwards.
        model: an :class:`etgnn.ETGNN` with ``model.uncertainty`` (LLPR, or a deep ensemble: then
            the samples are its members, whatever ``n_samples``).
        n_samples: posterior samples (>= 1).
        direction: Cartesian q -> 0 direction of the NAC.
        seed: seed of the weight draws (the same seed gives the same samples).
        bec_target, eps_target: see :func:`etgnn.observables.born.select_born_targets`.

    Raises:
        DataError: no sample has a positive-definite eps_inf.
    """
    from ..uncertainty.sampling import describe_samples, posterior_samples
    from .phonons import gamma_modes, nac_params, set_nac

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    bec, eps = select_born_targets(model.config.targets, bec_target, eps_target, source)
    prim = to_ase_atoms(phonon.primitive)
    _, samples = posterior_samples(model, [prim], n_samples, seed=seed, targets=[bec, eps])
    saved = phonon.nac_params
    out = {k: [] for k in ("born", "epsilon_inf", "frequencies", "nac_frequencies", "intensities", "nac_intensities", "strengths",
                           "epsilon_static")}
    dropped = 0
    try:
        for z, e in zip(samples[0][bec], samples[0][eps]):
            try:
                params = nac_params(phonon, z, e, symprec=symprec)
            except DataError:  # eps_inf of this sample not positive definite
                dropped += 1
                continue
            set_nac(phonon, params)
            modes = gamma_modes(phonon, direction)
            for k, v in (("born", params["born"]), ("epsilon_inf", params["dielectric"]),
                         ("frequencies", modes.frequencies), ("nac_frequencies", modes.nac_frequencies),
                         ("intensities", modes.intensities), ("nac_intensities", (modes.nac_p**2).sum(-1)),
                         ("strengths", modes.strengths),
                         ("epsilon_static", modes.epsilon_static)):
                out[k].append(np.asarray(v, dtype=float))
    finally:
        if saved:
            set_nac(phonon, saved)
    if not out["born"]:
        raise DataError(f"none of the {n_samples} posterior samples of {source} has a positive-definite eps_inf: "
                        "the uncertainty of eps_inf is too large for phonons")
    return GammaSamples(**{k: np.stack(v) for k, v in out.items()}, dropped=dropped,
                        source=describe_samples(model, n_samples))


def _pm(mean, std, fmt: str) -> str:
    return f"{mean:{fmt}} +- {std:{fmt}}"


def format_uncertainty(samples: GammaSamples, modes, epsilon_inf) -> str:
    """The +- one sigma part of ``etgnn phonons``: eps_inf, eps_0, LO/TO frequencies and IR intensities.

    Centre values are the plain model's (``modes`` and its symmetrised ``epsilon_inf``: the
    prediction at the posterior mean); the spread is the sample standard deviation.
    """
    from phonopy.physical_units import get_physical_units

    cm = get_physical_units().THzToCm
    diag = lambda t: np.diagonal(t, axis1=-2, axis2=-1)  # noqa: E731
    lines = [f"Uncertainty, +- one sigma of the Born charges and eps_inf over {samples.source} "
             f"(docs/uncertainty.md)" + (f", {samples.dropped} dropped (eps_inf not positive definite)"
                                               if samples.dropped else "") + ":",
             "eps_inf diagonal = " + ", ".join(_pm(m, s, ".3f") for m, s in zip(diag(np.asarray(epsilon_inf)), diag(samples.std("epsilon_inf")))),
             "eps_0   diagonal = " + ", ".join(_pm(m, s, ".3f") for m, s in zip(diag(modes.epsilon_static), diag(samples.std("epsilon_static")))),
             "", "Gamma with the NAC (q -> 0 along the same direction), +- one sigma:",
             f"{'mode':>4}  {'character':<9}  {'THz':>20}  {'cm-1':>20}"]
    f_std, t_std, i_std = samples.std("nac_frequencies"), samples.std("frequencies"), samples.std("intensities")
    for m, (f, label) in enumerate(zip(modes.nac_frequencies, modes.nac_labels)):
        if label != "acoustic":
            lines.append(f"{m + 1:4d}  {label:<9}  {_pm(f, f_std[m], '9.4f')}  {_pm(f * cm, f_std[m] * cm, '9.2f')}")
    lines += ["", "Gamma without NAC (TO modes), IR intensity tr S_m in e^2/amu, +- one sigma:",
              f"{'mode':>4}  {'character':<9}  {'THz':>20}  {'IR intensity':>22}"]
    for m, (f, label) in enumerate(zip(modes.frequencies, modes.labels)):
        if label != "acoustic":
            lines.append(f"{m + 1:4d}  {label:<9}  {_pm(f, t_std[m], '9.4f')}  {_pm(modes.intensities[m], i_std[m], '10.5f')}")
    return "\n".join(lines)
