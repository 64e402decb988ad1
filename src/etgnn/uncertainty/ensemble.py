"""Deep ensembles (issue 26's reference method): models of one config trained from different seeds;
their mean is the prediction and their spread the uncertainty.

:class:`Ensemble` is an uncertainty layer like :class:`etgnn.uncertainty.LLPR`: a model holds it
as ``model.uncertainty`` and it travels in the model file under ``"uncertainty"``.  The model's own
weights are member 0; :attr:`Ensemble.members` are the others (seeds ``model.seed + k``).  Whenever
its uncertainty layer has members, :meth:`etgnn.ETGNN.forward` (and ``forward_tensors``) returns
the mean of every member's outputs, so every consumer gets the mean: ``predict``, the ASE
calculator, ``evaluate``, ``export``, phonons and spectra.  Each member obeys the index symmetry,
the sum rule and the site symmetry exactly, and so does their mean (a linear combination).

``NAME_std`` is the members' sample standard deviation (ddof=1) per component, times one scale
per target fitted on the validation data (:class:`etgnn.uncertainty.posterior.VarianceCalibrator`,
the calibration LLPR uses: ``coverage2`` by default).  A component whose spread is below
:data:`NEGLIGIBLE_STD` of the target's training scale is one the site symmetry forbids (every
member predicts zero there, up to round-off): its sigma is exactly 0, as LLPR's.  Structures with
an element absent from the training data get LLPR's floor (the target's training spread).

Samples for phonons and spectra (:func:`etgnn.uncertainty.sampling.posterior_samples`) are the
members' predictions, their deviations from the mean times the calibration scale (exactly the
members when the scale is 1): every correlation between components, atoms and frames is kept.

Reference: Lakshminarayanan, Pritzel, Blundell, "Simple and scalable predictive uncertainty
estimation using deep ensembles", NeurIPS 2017.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.batch import to_device
from ..targets.losses import labelled_mask
from .llpr import floor_unseen, unseen_rows, warn_unseen_std
from .posterior import VarianceCalibrator

__all__ = ["Ensemble", "calibrated_std", "negligible_spread", "NEGLIGIBLE_STD", "FORMAT"]

#: version of :meth:`Ensemble.state_dict`'s layout
FORMAT = 1
#: members' spread (data units) below this fraction of the target's training scale: a component
#: the site symmetry forbids (float32 round-off is ~1e-7 of the scale); its sigma is exactly 0
NEGLIGIBLE_STD = 1e-5
#: what each calibration method of :data:`etgnn.uncertainty.posterior.METHODS` does to the scale
_DESCRIPTION = {"coverage2": "share of validation components within 2 sigma matched to a Gaussian's (0.954)",
                "coverage1": "share of validation components within 1 sigma matched to a Gaussian's (0.683)",
                "likelihood": "maximum Gaussian likelihood of the validation residuals (closed form)"}


def negligible_spread(std: Tensor, head_scale: float) -> Tensor:
    """True where the members' spread ``std`` (data units) is below :data:`NEGLIGIBLE_STD` of the
    target's training scale ``head_scale``: a component the site symmetry forbids."""
    return std <= NEGLIGIBLE_STD * head_scale


def calibrated_std(x: Tensor, scale: float, head_scale: float) -> Tensor:
    """``NAME_std`` from the members' outputs ``x`` (members along dim 0): ``scale`` times their
    standard deviation (ddof=1) per component, exactly 0 where it is negligible
    (:func:`negligible_spread`).  Tensor operations only: :class:`Ensemble` and the exported
    program of a deep ensemble (:mod:`etgnn.export`) both compute sigma with it."""
    std = x.std(0, correction=1)
    return (scale * std).masked_fill(negligible_spread(std, head_scale), 0.0)


class Ensemble:
    """A deep ensemble: the other members of a model (the model itself is member 0).

    Args:
        members: the other members, :class:`etgnn.ETGNN` models of the same config (1 or more).
        targets: the targets with a standard deviation (every target of the model).
        scales: ``{target: scale}`` of the members' spread (default 1: uncalibrated).
        calibration: ``{target: what the calibration found}`` (:meth:`calibrate`).
        seeds: ``model.seed`` of every member, member 0 first (for the record).
    """

    method = "ensemble"

    def __init__(self, members, targets, *, scales: dict | None = None, calibration: dict | None = None,
                 seeds: list[int] | None = None):
        self.members = list(members)
        if not self.members:
            raise ValueError("an ensemble needs at least one member besides the model itself")
        self.scales = {n: float((scales or {}).get(n, 1.0)) for n in targets}
        self.calibration = {n: dict(v) for n, v in (calibration or {}).items()}
        self.seeds = list(seeds) if seeds is not None else None

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: scale={s:.3g}" for n, s in self.scales.items())
        return f"Ensemble({self.size} members; {parts})"

    @property
    def size(self) -> int:
        """Members, the model itself included."""
        return 1 + len(self.members)

    @property
    def targets(self) -> list[str]:
        return list(self.scales)

    # ------------------------------------------------------------------ members' outputs
    @torch.no_grad()
    def _stacked(self, model, batch: dict[str, Tensor]):
        """``(mean, {target: (N, n_rows, C) float64}, {target: (n_rows, C) bool negligible})``."""
        outs = model.member_outputs(batch)
        mean = model.mean_outputs(outs)
        stacked, negligible = {}, {}
        for n in self.targets:
            x = torch.stack([o[n].detach() for o in outs]).to(torch.float64)
            x = x.reshape(x.shape[0], x.shape[1], -1)
            stacked[n] = x
            negligible[n] = negligible_spread(x.std(0, correction=1), float(model.heads[n].scale))
        return mean, stacked, negligible

    def _sigma(self, model, batch, stacked, negligible, covariance: bool = False) -> dict[str, Tensor]:
        unseen = unseen_rows(model, batch)
        if unseen is not None:
            warn_unseen_std(model, batch)
        out = {}
        for n in self.targets:
            head, x, scale = model.heads[n], stacked[n], self.scales[n]
            if covariance:
                d = (x - x.mean(0)).masked_fill(negligible[n], 0.0)
                cov = scale**2 * torch.einsum("src,srd->rcd", d, d) / (x.shape[0] - 1)
                if unseen is not None:
                    rows = unseen[0] if head.level == "atom" else unseen[1]
                    allowed = torch.diagonal(cov[rows], dim1=-2, dim2=-1) > 0
                    cov[rows] = cov[rows] + torch.diag_embed(allowed * float(head.scale) ** 2)
                out[n] = cov
                continue
            sigma = calibrated_std(x, scale, float(head.scale))
            sigma = floor_unseen(sigma, head, unseen)
            out[n] = sigma.reshape(sigma.shape[0], *(3,) * head.rank)
        return out

    def predict(self, model, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(prediction, std)`` from one pass of every member: the prediction is ``model(batch)``
        (the mean), ``std`` as :meth:`std`."""
        mean, stacked, negligible = self._stacked(model, batch)
        return mean, self._sigma(model, batch, stacked, negligible)

    def std(self, model, batch: dict[str, Tensor], *, covariance: bool = False) -> dict[str, Tensor]:
        """One standard deviation per output component, shaped like the prediction.

        Args:
            model: the model holding this ensemble.
            batch: a collated batch on the model's device.
            covariance: return ``{target: (n_rows, 3**rank, 3**rank)}`` covariances of the
                components of each row instead (the members' sample covariance times scale^2).

        Returns:
            ``{target: (n_rows, 3, ..., 3)}`` float64, data units: the scale times the members'
            standard deviation (ddof=1); exactly 0 for a component the site symmetry forbids.
        """
        _, stacked, negligible = self._stacked(model, batch)
        return self._sigma(model, batch, stacked, negligible, covariance=covariance)

    def deviations(self, model, batch: dict[str, Tensor], names=None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(prediction, {target: (N, n_rows, 3, ..., 3) float64})``: each member's deviation from the
        mean times the target's scale (zero where the site symmetry forbids a component); the
        prediction plus a deviation is one sample (:mod:`etgnn.uncertainty.sampling`)."""
        mean, stacked, negligible = self._stacked(model, batch)
        out = {}
        for n in self.targets if names is None else names:
            x = stacked[n]
            d = (self.scales[n] * (x - x.mean(0))).masked_fill(negligible[n], 0.0)
            out[n] = d.reshape(d.shape[0], d.shape[1], *(3,) * model.heads[n].rank)
        return mean, out

    # ------------------------------------------------------------------ calibration
    def calibrate(self, model, val, *, batch_size: int | None = None, method: str = "coverage2",
                  progress: bool = False) -> dict[str, dict]:
        """Fit each target's scale on labelled validation data (``val``, a GraphDataset).

        Returns (and keeps in :attr:`calibration`) per target: method, ``scale``, validation NLL,
        Spearman per row, components and the share within 1 and 2 sigma after calibration.
        """
        from tqdm.auto import tqdm

        from ..data.dataset import make_loader

        cal = {n: VarianceCalibrator([1.0], method) for n in self.targets}
        loader = make_loader(val, model.config, shuffle=False, batch_size=batch_size)
        was_training = model.training
        model.eval()
        try:
            for batch in tqdm(loader, desc="ensemble calibrate", unit="batch", disable=None if progress else True):
                batch = to_device(batch, model.device)
                mean, stacked, negligible = self._stacked(model, batch)
                for n in self.targets:
                    rows = labelled_mask(batch[n])
                    if not bool(rows.any()):
                        continue
                    err = (mean[n] - batch[n])[rows].detach().to("cpu", torch.float64)
                    var = stacked[n][:, rows].var(0, correction=1).cpu()
                    cal[n].add_variance(var.unsqueeze(-1), negligible[n][rows].cpu(), err.reshape(err.shape[0], -1))
        finally:
            model.train(was_training)
        for n in self.targets:
            _, alpha2, report = cal[n].fit()
            for key in ("grid_relative", "grid_nll", "grid_spearman"):
                report.pop(key)
            report["description"] = _DESCRIPTION[method]
            self.scales[n] = math.sqrt(alpha2)
            self.calibration[n] = {"scale": self.scales[n], **report}
        return self.calibration

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """What a model file keeps under ``"uncertainty"``: every other member's weights, the
        scales and the calibration report."""
        return {"method": self.method, "format": FORMAT, "members": [m.state_dict() for m in self.members],
                "seeds": self.seeds, "scales": dict(self.scales), "calibration": dict(self.calibration)}

    @classmethod
    def from_state_dict(cls, state: dict, model) -> "Ensemble":
        """Inverse of :meth:`state_dict`: the members are built like ``model`` (its config) and
        given their weights (:meth:`etgnn.ETGNN.replica`).

        Raises:
            ValueError: an unknown method or format, or a target the model does not have.
        """
        if state.get("method") != cls.method or state.get("format", 0) > FORMAT:
            raise ValueError(f"unknown uncertainty entry (method {state.get('method')!r}, format "
                             f"{state.get('format')!r}); this etgnn reads ensemble format <= {FORMAT}")
        missing = [n for n in state["scales"] if n not in model.targets]
        if missing:
            raise ValueError(f"ensemble uncertainty of target(s) {', '.join(missing)} that this model does not have")
        members = [model.replica(s) for s in state["members"]]
        return cls(members, list(state["scales"]), scales=state["scales"], calibration=state.get("calibration"),
                   seeds=state.get("seeds"))
