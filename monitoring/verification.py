"""Measurement and verification of savings, IPMVP Option C ("avoided energy use"), functional core.

A baseline model fitted on the period before a measure predicts what the building would have used in
the reporting period under the weather that was observed then (the *adjusted baseline*); avoided energy
is that counterfactual minus the metered use. ASHRAE Guideline 14 (2014) judges the baseline
(CV(RMSE) and NMBE with n - p degrees of freedom) and states how sure the savings are: the fractional
savings uncertainty

    FSU = 1.26 · t · CV · sqrt((n / n') · (1 + 2 / n') / m) / F

with n baseline hours, n' = n (1 - ρ) / (1 + ρ) the effective sample size under the lag-1
autocorrelation ρ of the baseline residuals, m reporting hours, F the savings fraction and t Student's t
for the confidence (two-sided) with n - p degrees of freedom. The absolute uncertainty is FSU · savings.

Non-routine hours: an hour is used only when its meter reading passed validation (`energy_valid`), the
reading and the outdoor temperature are present and the model could predict it; the same rule applies to
both periods, and the hours left out are counted in the result.

No storage, no network: the shell (`monitoring.savings_verify`) reads gold features and writes results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Guideline 14's empirical factor for the FSU formula (Reddy and Claridge 2000, as adopted by G14).
G14_FSU_FACTOR = 1.26


class VerificationError(ValueError):
    """The periods or data cannot give a verified saving; the message names what and how to fix it."""


@dataclass(frozen=True)
class Period:
    start: pd.Timestamp  # inclusive, UTC
    end: pd.Timestamp  # exclusive, UTC

    @classmethod
    def of(cls, start: Any, end: Any, name: str = "period") -> "Period":
        try:
            lo, hi = _utc(start), _utc(end)
        except (TypeError, ValueError) as err:
            raise VerificationError(f"{name}: cannot read {start!r} .. {end!r} as dates ({err}); use YYYY-MM-DD") from None
        if hi <= lo:
            raise VerificationError(f"{name}: end {hi.date()} must be after start {lo.date()}")
        return cls(lo, hi)

    @property
    def hours(self) -> int:
        return int((self.end - self.start) / pd.Timedelta(hours=1))

    def contains(self, ts: pd.DatetimeIndex | pd.Series) -> np.ndarray:
        ts = pd.DatetimeIndex(ts)
        return np.asarray((ts >= self.start) & (ts < self.end))


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class FitStatistics:
    n_hours: int
    n_parameters: int
    cv_rmse: float  # fraction
    nmbe: float  # fraction; positive: the model under-predicts
    autocorrelation: float  # lag-1 of the residuals on consecutive hours
    n_effective: float  # n'
    mean_kwh: float


def usable_hours(frame: pd.DataFrame) -> np.ndarray:
    """Hours a saving may be computed on: validated reading and outdoor temperature present."""
    energy = pd.to_numeric(frame["energy_kwh"], errors="coerce").to_numpy(dtype=np.float64)
    temperature = pd.to_numeric(frame["temperature"], errors="coerce").to_numpy(dtype=np.float64)
    valid = frame["energy_valid"].astype("boolean").fillna(False).to_numpy(dtype=bool) if "energy_valid" in frame else True
    return np.isfinite(energy) & np.isfinite(temperature) & valid


def lag1_autocorrelation(ts: pd.DatetimeIndex, residual: np.ndarray) -> float:
    """Lag-1 autocorrelation over pairs of consecutive hours (a gap breaks the pair, never bridges it)."""
    series = pd.Series(np.asarray(residual, dtype=np.float64), index=pd.DatetimeIndex(ts)).sort_index()
    if len(series) < 3:
        return 0.0
    full = series.reindex(pd.date_range(series.index[0], series.index[-1], freq="h"))
    centred = full - series.mean()
    pairs = centred * centred.shift(1)
    numerator = float(pairs.sum(skipna=True))
    denominator = float((centred**2).sum(skipna=True))
    return float(np.clip(numerator / denominator, -0.99, 0.99)) if denominator > 0 else 0.0


def fit_statistics(ts: pd.DatetimeIndex, observed: np.ndarray, predicted: np.ndarray, n_parameters: int) -> FitStatistics:
    """Guideline 14 CV(RMSE) and NMBE with n - p degrees of freedom, and the effective sample size n'."""
    y, yhat = np.asarray(observed, np.float64), np.asarray(predicted, np.float64)
    n = len(y)
    dof = n - n_parameters
    if dof <= 0:
        raise VerificationError(
            f"baseline: {n} usable hours for a model of {n_parameters} parameters; lengthen the baseline period"
        )
    mean = float(y.mean())
    if mean <= 0:
        raise VerificationError(f"baseline: mean metered use {mean:.3f} kWh/h is not positive; no savings can be expressed")
    residual = y - yhat
    rho = lag1_autocorrelation(ts, residual)
    return FitStatistics(
        n_hours=n,
        n_parameters=n_parameters,
        cv_rmse=float(np.sqrt(np.sum(residual**2) / dof) / mean),
        nmbe=float(np.sum(residual) / (dof * mean)),
        autocorrelation=rho,
        n_effective=float(n * (1 - rho) / (1 + rho)),
        mean_kwh=mean,
    )


def t_value(confidence: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - (1 - confidence) / 2, max(dof, 1.0)))


def fractional_savings_uncertainty(fit: FitStatistics, m: int, savings_fraction: float, confidence: float) -> float | None:
    """Guideline 14 FSU (a fraction of the savings); None when there are no savings to be a fraction of."""
    if m <= 0 or savings_fraction == 0 or not np.isfinite(savings_fraction):
        return None
    n, n_eff = fit.n_hours, max(fit.n_effective, 1.0)
    t = t_value(confidence, n - fit.n_parameters)
    return float(G14_FSU_FACTOR * t * fit.cv_rmse * np.sqrt((n / n_eff) * (1 + 2 / n_eff) / m) / abs(savings_fraction))


def savings_uncertainty_kwh(fit: FitStatistics, m: int, adjusted_baseline_kwh: float, confidence: float,
                            systematic: bool = False) -> float:
    """Absolute uncertainty of the savings: FSU · savings = 1.26 · t · CV · sqrt((n/n')(1 + 2/n')/m) · adjusted
    baseline (Guideline 14; defined even when the savings are zero). With `systematic`, the out-of-sample
    NMBE times the adjusted baseline is added in quadrature: a bias measured weeks away from the model's
    data does not shrink with more reporting hours, which the random part alone would claim."""
    n, n_eff = fit.n_hours, max(fit.n_effective, 1.0)
    t = t_value(confidence, n - fit.n_parameters)
    random = G14_FSU_FACTOR * t * fit.cv_rmse * np.sqrt((n / n_eff) * (1 + 2 / n_eff) / max(m, 1)) * abs(adjusted_baseline_kwh)
    bias = abs(fit.nmbe) * abs(adjusted_baseline_kwh) if systematic else 0.0
    return float(np.hypot(random, bias))


@dataclass
class BaselineFit:
    """What a baseline model gives verification: in-sample fit on the baseline and the counterfactual."""

    model: str  # towt | lstm
    n_parameters: int  # Guideline 14's p
    fitted: pd.Series  # predicted kWh on baseline hours (UTC index)
    counterfactual: pd.Series  # predicted kWh on reporting hours (UTC index)
    params: dict[str, Any] = field(default_factory=dict)  # for MLflow
    notes: list[str] = field(default_factory=list)
    # `fitted` holds out-of-sample predictions (hours the model did not learn from): its NMBE is then a
    # measured systematic error and joins the uncertainty (see `savings_uncertainty_kwh`).
    out_of_sample: bool = False


@dataclass
class PeriodFigures:
    start: str
    end: str
    n_hours: int  # hours used
    excluded_hours: int  # hours of the period left out (invalid, missing, unpredictable)


@dataclass
class SavingsResult:
    building_id: str
    model: str
    baseline: PeriodFigures
    reporting: PeriodFigures
    fit: FitStatistics
    metered_kwh: float
    adjusted_baseline_kwh: float
    savings_kwh: float
    savings_pct: float | None
    fsu_68: float | None  # fractions
    fsu_90: float | None
    uncertainty_68_kwh: float
    uncertainty_90_kwh: float
    cost: float
    currency: str
    kgco2e: float
    fit_acceptable: bool  # Guideline 14 thresholds hold
    sufficient: bool  # FSU at the requested confidence within the limit
    confidence: float
    notes: list[str] = field(default_factory=list)
    hourly: pd.DataFrame | None = None  # ts, metered_kwh, adjusted_baseline_kwh on used reporting hours

    def to_json(self) -> dict[str, Any]:
        """The shape issue 20 fixes, plus `excluded_hours`, `currency`, absolute uncertainties and notes."""
        pct = lambda x: None if x is None else round(100 * x, 3)  # noqa: E731
        return {
            "building_id": self.building_id,
            "model": self.model,
            "baseline": {
                "start": self.baseline.start, "end": self.baseline.end,
                "cv_rmse": round(self.fit.cv_rmse, 5), "nmbe": round(self.fit.nmbe, 5),
                "n_hours": self.baseline.n_hours, "excluded_hours": self.baseline.excluded_hours,
            },
            "reporting": {
                "start": self.reporting.start, "end": self.reporting.end, "n_hours": self.reporting.n_hours,
                "excluded_hours": self.reporting.excluded_hours,
                "metered_kwh": round(self.metered_kwh, 3), "adjusted_baseline_kwh": round(self.adjusted_baseline_kwh, 3),
            },
            "savings_kwh": round(self.savings_kwh, 3),
            "savings_pct": None if self.savings_pct is None else round(self.savings_pct, 3),
            "fsu_68_pct": pct(self.fsu_68),
            "fsu_90_pct": pct(self.fsu_90),
            "uncertainty_68_kwh": round(self.uncertainty_68_kwh, 3),
            "uncertainty_90_kwh": round(self.uncertainty_90_kwh, 3),
            "cost": round(self.cost, 2),
            "currency": self.currency,
            "kgco2e": round(self.kgco2e, 3),
            "fit_acceptable": self.fit_acceptable,
            "sufficient": self.sufficient,
            "notes": list(self.notes),
        }

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("hourly", None)
        return out


def excluded(period: Period, used: int) -> int:
    return max(period.hours - used, 0)


def verify(
    building_id: str,
    frame: pd.DataFrame,
    baseline: Period,
    reporting: Period,
    fit: BaselineFit,
    *,
    tariff_per_kwh: float,
    currency: str,
    grid_factor_kg_per_kwh: float,
    max_cv_rmse: float,
    max_abs_nmbe: float,
    max_fsu: float,
    confidence: float,
) -> SavingsResult:
    """Avoided energy, its uncertainty and its money and carbon, from one building's hourly frame and a fitted baseline.

    `frame`: ts, energy_kwh, energy_valid, temperature for both periods. Hours not usable are left out of
    both periods alike and counted.
    """
    frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)).sort_values("ts")
    usable = usable_hours(frame)
    ts = pd.DatetimeIndex(frame["ts"])
    energy = pd.to_numeric(frame["energy_kwh"], errors="coerce").to_numpy(np.float64)

    in_base = baseline.contains(ts) & usable
    fitted = fit.fitted.reindex(ts[in_base]).to_numpy(np.float64)
    base_ok = np.isfinite(fitted)
    base_ts, base_y, base_yhat = ts[in_base][base_ok], energy[in_base][base_ok], fitted[base_ok]
    if len(base_ts) == 0:
        raise VerificationError(f"baseline {baseline.start.date()} .. {baseline.end.date()}: no usable hour for building {building_id!r}")
    stats = fit_statistics(base_ts, base_y, base_yhat, fit.n_parameters)

    in_rep = reporting.contains(ts) & usable
    counterfactual = fit.counterfactual.reindex(ts[in_rep]).to_numpy(np.float64)
    rep_ok = np.isfinite(counterfactual)
    rep_ts, rep_y, rep_yhat = ts[in_rep][rep_ok], energy[in_rep][rep_ok], counterfactual[rep_ok]
    m = len(rep_ts)
    if m == 0:
        raise VerificationError(f"reporting {reporting.start.date()} .. {reporting.end.date()}: no usable hour for building {building_id!r}")

    metered, adjusted = float(rep_y.sum()), float(rep_yhat.sum())
    savings = adjusted - metered
    fraction = savings / adjusted if adjusted > 0 else float("nan")
    u68, u90, u_req = (savings_uncertainty_kwh(stats, m, adjusted, c, fit.out_of_sample) for c in (0.68, 0.90, confidence))
    fsu = lambda u: None if savings == 0 or not np.isfinite(fraction) else u / abs(savings)  # noqa: E731
    fsu_68, fsu_90, fsu_req = fsu(u68), fsu(u90), fsu(u_req)
    notes = list(fit.notes)
    fit_ok = stats.cv_rmse <= max_cv_rmse and abs(stats.nmbe) <= max_abs_nmbe
    if not fit_ok:
        notes.append(
            f"baseline fit fails ASHRAE Guideline 14 (CV(RMSE) {stats.cv_rmse:.1%} vs ≤ {max_cv_rmse:.0%}, "
            f"NMBE {stats.nmbe:+.1%} vs ±{max_abs_nmbe:.0%}): savings are indicative only"
        )
    sufficient = fsu_req is not None and fsu_req <= max_fsu
    if not sufficient:
        if fsu_req is None:
            notes.append(f"no savings measured over {m} h: nothing to be {confidence:.0%} confident about")
        else:
            needed = int(np.ceil(m * (fsu_req / max_fsu) ** 2))
            notes.append(
                f"reporting period too short for {confidence:.0%} confidence: FSU {fsu_req:.0%} exceeds {max_fsu:.0%} "
                f"over {m} usable h; at this savings rate about {needed} h are needed"
            )
    # Hours a baseline leaves unpredicted by design (the LSTM's statistics use held-out weeks) are not
    # non-routine: only hours missing or flagged invalid count as excluded from the baseline.
    base_excl, rep_excl = excluded(baseline, int(in_base.sum())), excluded(reporting, m)
    if base_excl or rep_excl:
        notes.append(
            f"non-routine hours left out of both periods alike: {base_excl} baseline h, {rep_excl} reporting h "
            f"(flagged invalid, missing or not predictable)"
        )
    hourly = pd.DataFrame({"ts": rep_ts, "metered_kwh": rep_y, "adjusted_baseline_kwh": rep_yhat})
    return SavingsResult(
        building_id=building_id,
        model=fit.model,
        baseline=PeriodFigures(baseline.start.isoformat(), baseline.end.isoformat(), len(base_ts), base_excl),
        reporting=PeriodFigures(reporting.start.isoformat(), reporting.end.isoformat(), m, rep_excl),
        fit=stats,
        metered_kwh=metered,
        adjusted_baseline_kwh=adjusted,
        savings_kwh=savings,
        savings_pct=None if not np.isfinite(fraction) else 100 * fraction,
        fsu_68=fsu_68,
        fsu_90=fsu_90,
        uncertainty_68_kwh=u68,
        uncertainty_90_kwh=u90,
        cost=savings * tariff_per_kwh,
        currency=currency,
        kgco2e=savings * grid_factor_kg_per_kwh,
        fit_acceptable=fit_ok,
        sufficient=sufficient,
        confidence=confidence,
        notes=notes,
        hourly=hourly,
    )
