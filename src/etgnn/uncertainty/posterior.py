"""The last-layer posterior of one head (pure linear algebra, float64).

With last-layer features ``f`` (one row per labelled output component, ``P`` columns; see
:mod:`etgnn.uncertainty.features`) of the training data stacked into ``F``, LLPR gives every
output component the variance

    sigma^2(f) = alpha^2 f^T (F^T F + lambda I)^-1 f

which is the posterior predictive variance of Bayesian linear regression on the features with
noise variance ``alpha^2`` and prior weight variance ``alpha^2 / lambda``.  ``lambda`` and
``alpha`` are fitted on validation data (:class:`Calibrator`): by default ``alpha`` makes the
share of validation components within 2 sigma a Gaussian's (0.954) and ``lambda`` is the grid
value (relative to the mean eigenvalue of ``F^T F``) whose sigma ranks the validation rows'
errors best; ``method="likelihood"`` maximises the Gaussian likelihood instead (``alpha^2 =
mean(e^2 / v)`` in closed form, ``v = f^T (F^T F + lambda I)^-1 f``, lowest NLL over the grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["LastLayerPosterior", "Calibrator", "VarianceCalibrator", "DEFAULT_GRID", "METHODS"]

#: regularisers tried by the calibration, relative to the mean eigenvalue of F^T F
DEFAULT_GRID = tuple(10.0 ** np.arange(-8.0, 2.01, 0.5))
#: a component whose feature norm^2 is below this fraction of the training components' mean is
#: one the site symmetry forbids (zero for any weights; what is left is float32 round-off, about
#: 1e-7 relative): its sigma is exactly 0 and the calibration leaves it out
NEGLIGIBLE = 1e-7


class LastLayerPosterior:
    """``F^T F`` of one head, its regulariser ``lambda`` and calibration ``alpha^2``.

    Args:
        n_features: ``P``, the number of last-layer weights.
    """

    def __init__(self, n_features: int):
        self.n_features = int(n_features)
        #: (P, P) float64: sum over training components of f f^T
        self.ftf = torch.zeros(self.n_features, self.n_features, dtype=torch.float64)
        #: training components accumulated
        self.n_components = 0
        #: absolute regulariser (units of F^T F); None until calibrated
        self.regularizer: float | None = None
        #: calibration factor alpha^2 (data units^2 per unit of f^T Sigma f); None until calibrated
        self.alpha2: float | None = None
        #: what the calibration found (method, relative lambda, NLL, validation coverage, ...)
        self.calibration: dict = {}
        self._eig: tuple[Tensor, Tensor] | None = None
        self._cov: Tensor | None = None

    # ------------------------------------------------------------------ training pass
    def add(self, f: Tensor) -> None:
        """Accumulate training features ``f`` (m, P), one row per labelled output component."""
        f = f.detach().to("cpu", torch.float64).reshape(-1, self.n_features)
        self.ftf += f.T @ f
        self.n_components += f.shape[0]
        self._eig = self._cov = None

    @property
    def mean_square(self) -> float:
        """Mean squared feature norm of the training components."""
        return float(torch.trace(self.ftf)) / max(self.n_components, 1)

    def negligible(self, f: Tensor) -> Tensor:
        """(...) bool: components of ``f`` (..., P) that a symmetry forbids (see :data:`NEGLIGIBLE`)."""
        return (f.to(torch.float64) ** 2).sum(-1) <= NEGLIGIBLE * self.mean_square

    @property
    def mean_eigenvalue(self) -> float:
        """trace(F^T F) / P (the unit of the relative regulariser)."""
        return float(torch.trace(self.ftf)) / max(self.n_features, 1)

    def eig(self) -> tuple[Tensor, Tensor]:
        """``(s, U)`` with ``F^T F = U diag(s) U^T`` (s >= 0, float64)."""
        if self._eig is None:
            s, u = torch.linalg.eigh(self.ftf)
            self._eig = (s.clamp(min=0.0), u)
        return self._eig

    # ------------------------------------------------------------------ posterior
    def set(self, regularizer: float, alpha2: float) -> None:
        """Fix ``lambda`` (absolute, units of F^T F) and ``alpha^2``."""
        if not regularizer > 0 or not alpha2 > 0:
            raise ValueError(f"regularizer and alpha2 must be > 0, got {regularizer!r}, {alpha2!r}")
        self.regularizer, self.alpha2 = float(regularizer), float(alpha2)
        self._cov = None

    @property
    def ready(self) -> bool:
        return self.regularizer is not None and self.alpha2 is not None

    def covariance(self) -> Tensor:
        """(P, P) float64: ``alpha^2 (F^T F + lambda I)^-1``, the posterior of the weights."""
        if not self.ready:
            raise RuntimeError("the posterior is not calibrated yet (no regularizer / alpha2)")
        if self._cov is None:
            s, u = self.eig()
            self._cov = (u * (self.alpha2 / (s + self.regularizer))) @ u.T
        return self._cov

    def variance(self, f: Tensor) -> Tensor:
        """``f^T Sigma f`` for features ``f`` (..., P): (...) float64 on ``f``'s device; exactly 0
        for a component a symmetry forbids (:meth:`negligible`)."""
        f = f.to(torch.float64)
        cov = self.covariance().to(f.device)
        var = ((f @ cov) * f).sum(-1).clamp(min=0.0)
        return var.masked_fill(self.negligible(f), 0.0)

    def component_covariance(self, jac: Tensor) -> Tensor:
        """Covariance of the components of each row: ``J Sigma J^T`` for ``jac`` (n, C, P): (n, C, C)."""
        jac = jac.to(torch.float64)
        jac = jac.masked_fill(self.negligible(jac).unsqueeze(-1), 0.0)
        return jac @ self.covariance().to(jac.device) @ jac.transpose(-1, -2)

    def calibrator(self, grid=DEFAULT_GRID, method: str = "coverage2") -> "Calibrator":
        """A :class:`Calibrator` for this posterior over the relative regularisers ``grid``."""
        return Calibrator(self, grid, method)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"n_features": self.n_features, "ftf": self.ftf.clone(), "n_components": self.n_components,
                "regularizer": self.regularizer, "alpha2": self.alpha2, "calibration": dict(self.calibration)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LastLayerPosterior":
        post = cls(state["n_features"])
        post.ftf = state["ftf"].to("cpu", torch.float64)
        post.n_components = int(state["n_components"])
        post.regularizer, post.alpha2 = state["regularizer"], state["alpha2"]
        post.calibration = dict(state.get("calibration") or {})
        return post


#: calibration methods: ``coverage2`` / ``coverage1`` match the share of validation components
#: within 2 / 1 sigma to a Gaussian's (0.954 / 0.683), lambda chosen by the validation Spearman
#: correlation of sigma and error per row; ``likelihood`` maximises the Gaussian likelihood of the
#: residuals (alpha^2 in closed form, lambda on the grid)
METHODS = ("coverage2", "coverage1", "likelihood")


class VarianceCalibrator:
    """Fit the scale ``alpha^2`` of uncalibrated variances ``v`` (one per component and candidate
    of a grid) on validation residuals: ``sigma^2 = alpha^2 v``.

    The part of the calibration that does not depend on where ``v`` comes from: LLPR's
    :class:`Calibrator` feeds it ``f^T (F^T F + lambda I)^-1 f`` for every ``lambda`` of its grid, a
    deep ensemble (:class:`etgnn.uncertainty.Ensemble`) the variance of its members (a grid of
    one).  It keeps ``e^2 / v`` and ``log v`` per component and the mean ``v`` and squared error per
    row (numbers x grid).

    Args:
        relative: the grid (``L`` values; what they mean is the caller's).
        method: one of :data:`METHODS`.
    """

    def __init__(self, relative, method: str = "coverage2"):
        if method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.relative = np.asarray(relative, dtype=float)
        self._ratio: list[Tensor] = []
        self._logv: list[Tensor] = []
        self._row_v: list[Tensor] = []
        self._row_e: list[Tensor] = []
        self.n_negligible = 0

    def add_variance(self, v: Tensor, negligible: Tensor, err: Tensor) -> None:
        """Uncalibrated variances ``v`` (n_rows, C, L), the components a symmetry forbids
        ``negligible`` (n_rows, C) bool, and residuals ``err`` = prediction - label (n_rows, C) of
        labelled rows (float64, CPU)."""
        self.n_negligible += int(negligible.sum())
        v = v.masked_fill(negligible.unsqueeze(-1), 0.0)
        keep = ~negligible
        self._ratio.append(err[keep].unsqueeze(1) ** 2 / v[keep])
        self._logv.append(torch.log(v[keep]))
        self._row_v.append(v.mean(1))
        self._row_e.append((err**2).mean(1))

    def _spearman(self, row_v: Tensor, row_e: Tensor) -> np.ndarray:
        from scipy.stats import rankdata

        e = rankdata(row_e.numpy())
        out = []
        for col in row_v.T.numpy():
            r = np.corrcoef(rankdata(col), e)[0, 1] if len(e) > 1 and np.ptp(col) > 0 else np.nan
            out.append(r)
        return np.asarray(out)

    def fit(self) -> tuple[int, float, dict]:
        """``(k, alpha^2, report)``: the grid index chosen by :attr:`method`, its ``alpha^2`` and
        what the fit found (method, description, NLL per component, validation Spearman per row,
        components, the share within 1 and 2 sigma after calibration, and the grid's NLL and
        Spearman)."""
        if not self._ratio:
            raise ValueError("no validation components: the calibration needs labelled validation data")
        ratio, logv = torch.cat(self._ratio), torch.cat(self._logv)
        if ratio.shape[0] == 0:
            raise ValueError("every validation component has zero features: nothing to calibrate")
        ml_alpha2 = ratio.mean(0).clamp(min=1e-300)
        spearman = self._spearman(torch.cat(self._row_v), torch.cat(self._row_e))
        if self.method == "likelihood":
            alpha2 = ml_alpha2
            nll = 0.5 * (math.log(2 * math.pi) + torch.log(alpha2) + logv.mean(0) + 1.0)
            k = int(torch.argmin(torch.where(torch.isfinite(nll), nll, torch.full_like(nll, math.inf))))
            how = "maximum Gaussian likelihood of the validation residuals (alpha^2 closed form, lambda on a grid)"
        else:
            mult = 2.0 if self.method == "coverage2" else 1.0
            level = math.erf(mult / math.sqrt(2.0))
            alpha2 = (torch.quantile(ratio.sqrt(), level, dim=0) / mult).clamp(min=1e-150) ** 2
            nll = 0.5 * (math.log(2 * math.pi) + torch.log(alpha2) + logv.mean(0) + (ratio / alpha2).mean(0))
            k = int(np.nanargmax(np.where(np.isfinite(spearman), spearman, -np.inf))) if np.isfinite(spearman).any() \
                else int(np.argmin(np.abs(self.relative - 1e-4)))
            how = (f"share of validation components within {mult:g} sigma matched to a Gaussian's ({level:.3f}); "
                   "lambda: best validation Spearman(sigma, error) per row on a grid")
        z = torch.sqrt(ratio[:, k] / alpha2[k])
        report = {
            "method": self.method, "description": how, "nll": float(nll[k]), "spearman": float(spearman[k]),
            "n_components": int(ratio.shape[0]), "n_negligible": self.n_negligible,
            "coverage_1sigma": float((z <= 1.0).double().mean()), "coverage_2sigma": float((z <= 2.0).double().mean()),
            "grid_relative": [float(x) for x in self.relative], "grid_nll": [float(x) for x in nll],
            "grid_spearman": [float(x) for x in spearman],
        }
        return k, float(alpha2[k]), report


class Calibrator(VarianceCalibrator):
    """Fit ``lambda`` and ``alpha^2`` of a :class:`LastLayerPosterior` on validation residuals.

    Feed it batches with :meth:`add`, then :meth:`finish` sets the posterior.  For every
    regulariser of the grid it keeps ``e^2 / v`` and ``log v`` per component and the mean ``v``
    and squared error per row (numbers x grid, not the features; :class:`VarianceCalibrator`).

    Methods (:data:`METHODS`): residuals of real models are heavy-tailed (a few crystals with
    errors ten times the typical), so the Gaussian likelihood makes every sigma large to cover
    them (phonondb: 98 % of components within 1 sigma); matching a coverage is robust to the
    tail.  With ``coverage2`` (default) the share within 2 sigma is Gaussian's, the issue's goal;
    ``coverage1`` gives the smallest miscalibration area but covers fewer components at 2 sigma.
    ``lambda``, which sets how sigma ranks the rows and not their scale, is then the one whose
    sigma ranks the validation rows' errors best (Spearman).
    """

    def __init__(self, posterior: LastLayerPosterior, grid=DEFAULT_GRID, method: str = "coverage2"):
        if posterior.n_components == 0:
            raise ValueError("no training components were accumulated: nothing to calibrate")
        super().__init__(grid, method)
        self.posterior = posterior
        s, u = posterior.eig()
        self.lambdas = torch.as_tensor(self.relative * posterior.mean_eigenvalue, dtype=torch.float64)
        self._u = u
        self._inv = 1.0 / (s.unsqueeze(1) + self.lambdas.unsqueeze(0))  # (P, L)

    def add(self, f: Tensor, err: Tensor) -> None:
        """Validation features ``f`` (n_rows, C, P) and residuals ``err`` = prediction - label
        (n_rows, C) of labelled rows (a row: an atom or a structure; (m, P) and (m,): one
        component per row)."""
        f = f.detach().to("cpu", torch.float64)
        f = f.reshape(f.shape[0], -1, self.posterior.n_features)
        err = err.detach().to("cpu", torch.float64).reshape(f.shape[0], -1)
        negligible = self.posterior.negligible(f)  # (n_rows, C)
        v = ((f @ self._u) ** 2) @ self._inv  # (n_rows, C, L)
        self.add_variance(v, negligible, err)

    def finish(self) -> dict:
        """Set the posterior's ``lambda`` and ``alpha^2`` by :attr:`method` and return
        ``posterior.calibration``: method, relative and absolute lambda, alpha, NLL per
        component, validation Spearman per row, components, the share within 1 and 2 sigma after
        calibration (validation), and the grid's NLL and Spearman."""
        k, alpha2, report = self.fit()
        self.posterior.set(float(self.lambdas[k]), alpha2)
        self.posterior.calibration = {
            "method": report["method"], "description": report["description"],
            "lambda_relative": float(self.relative[k]), "lambda": float(self.lambdas[k]),
            "alpha": math.sqrt(alpha2), **{key: v for key, v in report.items() if key not in ("method", "description")},
        }
        return self.posterior.calibration
