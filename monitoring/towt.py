"""CalTRACK hourly: the time-of-week-and-temperature (TOWT) baseline M&V practitioners recognise.

Written from the CalTRACK 2.0 hourly method as OpenDSM/eemeter implements it (OpenDSM itself was not
used: with our lock its import fails, scikit-fda 0.10 against multimethod 2.1, and it would add numba,
llvmlite, nlopt and 15 other packages for three modules of arithmetic):

1. Occupancy per hour of the week: a preliminary weighted least-squares fit of
   ``energy ~ cdd_65 + hdd_50`` (hourly degree-hours at 65 °F and 50 °F); an hour of the week is
   *occupied* when more than 65% of its residuals are positive (it uses more than temperature explains).
2. Temperature bins: candidate endpoints 30, 45, 55, 65, 75, 90 °F, fitted separately for occupied and
   unoccupied hours; working from the outside in, an endpoint is dropped while a bin holds fewer than 20
   hours, so every slope has data behind it.
3. The model: ``energy ~ C(hour_of_week) - 1 + bin_i:occupied + bin_i:unoccupied``, where the bin
   features split the temperature piecewise linearly (bin 0 = min(T, b1), middle bins the part of T
   inside them, the last max(T - b_last, 0)), fitted by weighted least squares.
4. Segmentation: ``three_month_weighted`` fits one model per calendar month on that month (weight 1) and
   its two neighbours (weight 0.5), as CalTRACK does for a 12-month baseline; ``single`` fits one model on
   the whole baseline. ``auto`` (the default) takes the weighted months only when the baseline covers a
   year: a month model with no data of its own or its neighbours cannot predict, and CalTRACK's monthly
   segmentation presumes a 12-month baseline.

Hours of the week are on the building's local clock (occupancy follows the wall clock across DST).
Pure numpy/pandas: no storage, no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

# CalTRACK 2.0 method constants (the method's definition, not platform policy).
BIN_ENDPOINTS_F: tuple[float, ...] = (30.0, 45.0, 55.0, 65.0, 75.0, 90.0)
MIN_HOURS_PER_BIN = 20
OCCUPANCY_THRESHOLD = 0.65
PRELIMINARY_HDD_BASE_F = 50.0
PRELIMINARY_CDD_BASE_F = 65.0
HOURS_PER_WEEK = 168
# Below a year of baseline the weighted monthly segmentation leaves reporting months without a model.
YEAR_DAYS = 365

SegmentType = Literal["auto", "single", "three_month_weighted"]


def to_fahrenheit(celsius: np.ndarray) -> np.ndarray:
    return np.asarray(celsius, dtype=np.float64) * 1.8 + 32.0


def hour_of_week(ts: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """0 = Monday 00:00 local time, 167 = Sunday 23:00."""
    local = pd.DatetimeIndex(ts).tz_convert(timezone)
    return (local.dayofweek * 24 + local.hour).to_numpy(dtype=np.int64)


def fit_bin_endpoints(temperature_f: np.ndarray, candidates: tuple[float, ...] = BIN_ENDPOINTS_F,
                      min_hours: int = MIN_HOURS_PER_BIN) -> tuple[float, ...]:
    """CalTRACK's bin merging: drop endpoints from the outside in until every bin holds `min_hours` hours."""
    temps = np.asarray(temperature_f, dtype=np.float64)
    temps = temps[np.isfinite(temps)]
    kept = sorted(candidates)
    while kept:
        edges = [-np.inf, *kept, np.inf]
        # Bins are closed on the right, as in eemeter's pd.cut.
        counts = [int(((temps > lo) & (temps <= hi)).sum()) for lo, hi in zip(edges, edges[1:])]
        drop: set[float] = set()
        if counts[0] < min_hours:
            drop.add(kept[0])
        if counts[-1] < min_hours:
            drop.add(kept[-1])
        if not drop:
            drop = {edges[i + 1] for i in range(1, len(counts) - 1) if counts[i] < min_hours}
        if not drop:
            break
        kept = [e for e in kept if e not in drop]
    return tuple(kept)


def bin_features(temperature_f: np.ndarray, endpoints: tuple[float, ...]) -> np.ndarray:
    """Piecewise-linear temperature features [n, len(endpoints) + 1]; their sum is the temperature."""
    t = np.asarray(temperature_f, dtype=np.float64)
    if not endpoints:
        return t[:, None]
    cols = [np.minimum(t, endpoints[0])]
    for lo, hi in zip(endpoints, endpoints[1:]):
        cols.append(np.clip(t - lo, 0.0, hi - lo))
    cols.append(np.maximum(t - endpoints[-1], 0.0))
    return np.column_stack(cols)


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    return coef


def estimate_occupancy(how: np.ndarray, energy: np.ndarray, temperature_f: np.ndarray, weight: np.ndarray,
                       threshold: float = OCCUPANCY_THRESHOLD) -> np.ndarray:
    """Occupied flag per hour of the week (bool [168]) from the sign of the degree-hour model's residuals."""
    x = np.column_stack([
        np.ones_like(energy),
        np.maximum(temperature_f - PRELIMINARY_CDD_BASE_F, 0.0),
        np.maximum(PRELIMINARY_HDD_BASE_F - temperature_f, 0.0),
    ])
    residual = energy - x @ _wls(x, energy, weight)
    positive = np.bincount(how, weights=(residual > 0).astype(float), minlength=HOURS_PER_WEEK)
    seen = np.bincount(how, minlength=HOURS_PER_WEEK)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = positive / seen
    return np.where(seen > 0, share > threshold, False)


@dataclass(frozen=True)
class SegmentModel:
    occupied: np.ndarray  # bool [168]
    occupied_bins: tuple[float, ...]
    unoccupied_bins: tuple[float, ...]
    coefficients: np.ndarray  # 168 hour-of-week intercepts, then occupied, then unoccupied bin slopes
    seen_hours: np.ndarray  # bool [168]: hours of the week the segment had data for

    @property
    def n_parameters(self) -> int:
        return int(self.seen_hours.sum()) + len(self.occupied_bins) + 1 + len(self.unoccupied_bins) + 1


def _design(how: np.ndarray, temperature_f: np.ndarray, occupied: np.ndarray,
            occupied_bins: tuple[float, ...], unoccupied_bins: tuple[float, ...]) -> np.ndarray:
    dummies = np.zeros((len(how), HOURS_PER_WEEK))
    dummies[np.arange(len(how)), how] = 1.0
    occ = occupied[how].astype(float)[:, None]
    return np.hstack([
        dummies,
        bin_features(temperature_f, occupied_bins) * occ,
        bin_features(temperature_f, unoccupied_bins) * (1.0 - occ),
    ])


def fit_segment(how: np.ndarray, energy: np.ndarray, temperature_f: np.ndarray, weight: np.ndarray) -> SegmentModel:
    keep = weight > 0
    how, energy, temperature_f, weight = how[keep], energy[keep], temperature_f[keep], weight[keep]
    occupied = estimate_occupancy(how, energy, temperature_f, weight)
    occ_rows = occupied[how]
    occupied_bins = fit_bin_endpoints(temperature_f[occ_rows])
    unoccupied_bins = fit_bin_endpoints(temperature_f[~occ_rows])
    x = _design(how, temperature_f, occupied, occupied_bins, unoccupied_bins)
    coef = _wls(x, energy, weight)
    seen = np.bincount(how, minlength=HOURS_PER_WEEK) > 0
    return SegmentModel(occupied, occupied_bins, unoccupied_bins, coef, seen)


def predict_segment(seg: SegmentModel, how: np.ndarray, temperature_f: np.ndarray) -> np.ndarray:
    x = _design(how, temperature_f, seg.occupied, seg.occupied_bins, seg.unoccupied_bins)
    out = x @ seg.coefficients
    # An hour of the week the segment never saw has no intercept: no prediction rather than a wrong one.
    return np.where(seg.seen_hours[how], out, np.nan)


def month_weights(months: np.ndarray, month: int) -> np.ndarray:
    """CalTRACK three_month_weighted: the month itself 1, the months either side 0.5, others 0."""
    prev_m, next_m = (month - 2) % 12 + 1, month % 12 + 1
    return np.where(months == month, 1.0, np.where((months == prev_m) | (months == next_m), 0.5, 0.0))


@dataclass
class TowtModel:
    """A fitted CalTRACK hourly model: one segment (`single`) or one per calendar month."""

    timezone: str
    segment_type: str
    segments: dict[int, SegmentModel] = field(default_factory=dict)  # 0 = single, else month 1..12

    @property
    def n_parameters(self) -> int:
        """Parameters of the largest segment: the p in Guideline 14's n - p."""
        return max(s.n_parameters for s in self.segments.values())

    def predict(self, ts: pd.DatetimeIndex, temperature_c: np.ndarray) -> np.ndarray:
        ts = pd.DatetimeIndex(ts)
        how = hour_of_week(ts, self.timezone)
        temp_f = to_fahrenheit(temperature_c)
        if self.segment_type == "single":
            return predict_segment(self.segments[0], how, temp_f)
        months = ts.tz_convert(self.timezone).month.to_numpy()
        out = np.full(len(ts), np.nan)
        for month, seg in self.segments.items():
            rows = months == month
            if rows.any():
                out[rows] = predict_segment(seg, how[rows], temp_f[rows])
        return out


def fit_towt(ts: pd.DatetimeIndex, energy_kwh: np.ndarray, temperature_c: np.ndarray, *, timezone: str = "UTC",
             segment_type: SegmentType = "auto") -> TowtModel:
    """Fit CalTRACK hourly on the hours given (invalid hours already left out). No I/O."""
    ts = pd.DatetimeIndex(ts)
    energy = np.asarray(energy_kwh, dtype=np.float64)
    temp_f = to_fahrenheit(temperature_c)
    ok = np.isfinite(energy) & np.isfinite(temp_f)
    ts, energy, temp_f = ts[ok], energy[ok], temp_f[ok]
    if len(ts) < HOURS_PER_WEEK:
        raise ValueError(f"TOWT needs at least {HOURS_PER_WEEK} valid baseline hours (one per hour of the week), got {len(ts)}")
    if segment_type == "auto":
        span_days = (ts.max() - ts.min()) / pd.Timedelta(days=1)
        segment_type = "three_month_weighted" if span_days >= YEAR_DAYS - 1 else "single"
    how = hour_of_week(ts, timezone)
    model = TowtModel(timezone=timezone, segment_type=segment_type)
    if segment_type == "single":
        model.segments[0] = fit_segment(how, energy, temp_f, np.ones(len(energy)))
        return model
    months = ts.tz_convert(timezone).month.to_numpy()
    for month in range(1, 13):
        weight = month_weights(months, month)
        if (weight > 0).sum() >= HOURS_PER_WEEK:
            model.segments[month] = fit_segment(how, energy, temp_f, weight)
    return model
