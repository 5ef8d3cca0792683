"""Consumption anomalies on hourly frames: what was wasted, where, when, and how much.

Every hour gets an *expected* energy: the served forecast's p50 where one exists, otherwise a
time-of-week-and-temperature baseline (LBNL's TOWT model, the M&V standard) fitted per building on the
weeks before, so that a cold night is not called waste. An hour is anomalous when

* it lies outside the forecast's p10–p90 band by more than `band_margin` band widths, or, without a
  forecast, its robust z-score (scaled MAD of the baseline's residuals) exceeds `z_threshold`;
* it is an after-hours hour (local `after_hours_start_h`–`after_hours_end_h`) more than
  `after_hours_ratio` above expected (night baseload creeping up is waste even inside a wide band);
* it is a weekend or holiday hour more than `weekend_ratio` above expected;
* it is part of a run of `stuck_hours` identical non-zero readings (a stuck meter).

Flagged hours of one building and kind that are at most `merge_gap_h` apart form one anomaly; its
excess is the sum of measured − expected over the span. Functions take frames and return frames; the
shell that reads tables and writes `monitoring.anomalies` lives in `monitoring.anomaly_store`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from wattflow.settings import AnomalySettings

KINDS = ("stuck_meter", "after_hours_load", "weekend_spike", "high_consumption", "low_consumption")
MAD_TO_SD = 1.4826


class AnomalyInputError(ValueError):
    """The frame handed to anomaly detection lacks a column it needs; the message names it."""


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnomalyInputError(f"{what}: missing column(s) {missing}; has {sorted(frame.columns)}")


def _how(frame: pd.DataFrame) -> np.ndarray:
    """Local hour of the week; a public holiday runs like a Sunday."""
    day = frame["day_of_week"].to_numpy(np.int64)
    if "is_holiday" in frame.columns:
        day = np.where(frame["is_holiday"].fillna(False).astype(bool).to_numpy(), 6, day)
    return day * 24 + frame["hour_of_day"].to_numpy(np.int64)


def after_hours_mask(hour_of_day: np.ndarray, start_h: int, end_h: int) -> np.ndarray:
    if start_h > end_h:  # wraps midnight, e.g. 22 → 6
        return (hour_of_day >= start_h) | (hour_of_day < end_h)
    return (hour_of_day >= start_h) & (hour_of_day < end_h)


TEMPERATURE_KNOTS_C = (0.0, 8.0, 16.0, 24.0)


def _temperature_basis(temperature: np.ndarray) -> np.ndarray:
    """Piecewise-linear temperature segments (the TOWT model's change points), NaN → column mean later."""
    t = np.nan_to_num(temperature, nan=np.nanmedian(temperature) if np.isfinite(temperature).any() else 0.0)
    columns = [t]
    columns += [np.clip(t - k, 0, None) for k in TEMPERATURE_KNOTS_C]
    return np.column_stack(columns)


def _temperature_design(frame: pd.DataFrame, settings: AnomalySettings) -> np.ndarray:
    night = after_hours_mask(frame["hour_of_day"].to_numpy(), settings.after_hours_start_h, settings.after_hours_end_h)
    basis = _temperature_basis(frame["temperature"].to_numpy(float))
    # Occupied and unoccupied hours respond to temperature differently (set-backs), as in LBNL's TOWT.
    return np.column_stack([basis * night[:, None], basis * ~night[:, None]])


def fit_time_of_week(how: np.ndarray, z: np.ndarray | None, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Least squares of y on hour-of-week indicators plus the columns of z, by Frisch–Waugh–Lovell:
    demean y and z within each hour of the week, regress, and recover the hour effects as group means.
    The same solution as the full 168 + k column regression, at the cost of a k-column one.

    Returns (hour-of-week effects [168], z coefficients, number of parameters)."""
    counts = np.bincount(how, minlength=168)
    seen = counts > 0
    safe = np.maximum(counts, 1)
    if z is None or z.shape[1] == 0:
        effects = np.bincount(how, weights=y, minlength=168) / safe
        return np.where(seen, effects, np.nan), np.zeros(0), int(seen.sum())
    y_mean = np.bincount(how, weights=y, minlength=168) / safe
    z_mean = np.column_stack([np.bincount(how, weights=z[:, j], minlength=168) / safe for j in range(z.shape[1])])
    z_tilde, y_tilde = z - z_mean[how], y - y_mean[how]
    gamma, _, rank, _ = np.linalg.lstsq(z_tilde, y_tilde, rcond=None)
    effects = y_mean - z_mean @ gamma
    return np.where(seen, effects, np.nan), gamma, int(seen.sum()) + int(rank)


class Baseline:
    """Time-of-week-and-temperature baseline per building (LBNL's TOWT, the M&V standard):
    least squares on hour-of-week indicators plus piecewise-linear temperature terms, fitted apart for
    after-hours and other hours; the residual spread (scaled MAD) per building and period gives z-scores.
    Without temperature it reduces to the mean of the same hour of the week."""

    def __init__(self, history: pd.DataFrame, settings: AnomalySettings) -> None:
        _require(history, ["building_id", "energy_kwh", "hour_of_day", "day_of_week"], "anomaly baseline")
        h = history.dropna(subset=["energy_kwh"])
        if "energy_valid" in h.columns:
            h = h[h["energy_valid"].fillna(False).astype(bool)]
        self.settings = settings
        self.with_temperature = "temperature" in h.columns and h["temperature"].notna().any()
        self.effects: dict[str, np.ndarray] = {}
        self.gamma: dict[str, np.ndarray] = {}
        self.spread: dict[tuple[str, bool], float] = {}
        for building_id, g in h.groupby("building_id"):
            how, y = _how(g), g["energy_kwh"].to_numpy(float)
            z = _temperature_design(g, settings) if self.with_temperature else None
            effects, gamma, n_parameters = fit_time_of_week(how, z, y)
            self.effects[str(building_id)], self.gamma[str(building_id)] = effects, gamma
            residual = y - effects[how] - (z @ gamma if z is not None else 0.0)
            # In-sample residuals understate the error: inflate by sqrt(n / (n - p)).
            inflate = np.sqrt(len(y) / max(len(y) - n_parameters, 1))
            night = after_hours_mask(g["hour_of_day"].to_numpy(), settings.after_hours_start_h, settings.after_hours_end_h)
            for period in (True, False):
                r = residual[night == period]
                mad = float(np.median(np.abs(r - np.median(r)))) * MAD_TO_SD * inflate if len(r) else np.nan
                self.spread[(str(building_id), period)] = mad

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Expected kWh and residual spread per row; NaN for buildings or hours of the week never seen."""
        expected = np.full(len(frame), np.nan)
        spread = np.full(len(frame), np.nan)
        night = after_hours_mask(
            frame["hour_of_day"].to_numpy(), self.settings.after_hours_start_h, self.settings.after_hours_end_h
        )
        for building_id, idx in frame.groupby("building_id").indices.items():
            effects = self.effects.get(str(building_id))
            if effects is None:
                continue
            g = frame.iloc[idx]
            value = effects[_how(g)]
            if self.with_temperature:
                value = value + _temperature_design(g, self.settings) @ self.gamma[str(building_id)]
            expected[idx] = np.clip(value, 0.0, None)
            spread[idx] = np.where(
                night[idx], self.spread.get((str(building_id), True), np.nan), self.spread.get((str(building_id), False), np.nan)
            )
        return expected, spread


def expected_energy(frame: pd.DataFrame, history: pd.DataFrame, settings: AnomalySettings) -> pd.DataFrame:
    """Add expected_kwh, expected_source, score, band_anomalous to each hour of `frame`."""
    _require(frame, ["building_id", "ts", "energy_kwh", "hour_of_day", "day_of_week"], "anomaly frame")
    out = frame.copy().reset_index(drop=True)
    for column in ("yhat_p10", "yhat_p50", "yhat_p90"):
        if column not in out.columns:
            out[column] = np.nan
    if history.empty:
        baseline, spread = np.full(len(out), np.nan), np.full(len(out), np.nan)
    else:
        baseline, spread = Baseline(history, settings).predict(out)

    energy = out["energy_kwh"]
    has_forecast = out["yhat_p50"].notna()
    width = (out["yhat_p90"] - out["yhat_p10"]).clip(lower=1e-6)
    above = (energy - out["yhat_p90"]) / width
    below = (out["yhat_p10"] - energy) / width
    band_score = np.where(above > 0, above, np.where(below > 0, -below, 0.0))
    spread = np.maximum(np.nan_to_num(spread, nan=0.0), np.maximum(0.02 * np.nan_to_num(np.abs(baseline)), 1e-3))
    z = (energy - baseline) / spread
    out["expected_kwh"] = np.where(has_forecast, out["yhat_p50"], baseline)
    out["expected_source"] = np.where(has_forecast, "forecast_p50", "time_of_week_temperature")
    out["score"] = np.where(has_forecast, band_score, z)
    band = np.where(has_forecast, np.abs(band_score) > settings.band_margin, np.abs(z) > settings.z_threshold)
    out["band_anomalous"] = band & energy.notna() & out["expected_kwh"].notna()
    return out


def stuck_runs(frame: pd.DataFrame, min_hours: int) -> np.ndarray:
    """True for hours inside runs of `min_hours` or more identical, non-zero, consecutive hourly readings.

    `frame` is sorted by building and ts with a default index.
    """
    energy = frame["energy_kwh"].to_numpy(float)
    building = frame["building_id"].to_numpy()
    ts = frame["ts"].to_numpy()
    same = np.zeros(len(frame), bool)
    if len(frame) > 1:
        same[1:] = (
            (building[1:] == building[:-1])
            & np.isclose(energy[1:], energy[:-1], rtol=0, atol=1e-9)
            & ((ts[1:] - ts[:-1]) == np.timedelta64(1, "h"))
            & (energy[1:] != 0)
        )
    run_id = np.cumsum(~same)
    run_length = np.bincount(run_id)[run_id]
    return run_length >= min_hours


def classify_hours(scored: pd.DataFrame, settings: AnomalySettings) -> pd.DataFrame:
    """One kind per anomalous hour (or None), most specific first: stuck, after-hours, weekend, band."""
    frame = scored.sort_values(["building_id", "ts"]).reset_index(drop=True)
    energy, expected = frame["energy_kwh"], frame["expected_kwh"]
    over = energy > expected
    ratio = (energy - expected) / expected.abs().clip(lower=1e-6)
    night = after_hours_mask(frame["hour_of_day"].to_numpy(), settings.after_hours_start_h, settings.after_hours_end_h)
    weekend = frame["is_weekend"].fillna(False).astype(bool) if "is_weekend" in frame else frame["day_of_week"] >= 5
    if "is_holiday" in frame:
        weekend = weekend | frame["is_holiday"].fillna(False).astype(bool)
    stuck = stuck_runs(frame, settings.stuck_hours)
    # A ratio alone is noisy where loads are small: it needs the hour to stand out too (above the
    # forecast's p90 by `ratio_min_band` widths, or `ratio_min_z` robust z-scores above the baseline).
    from_forecast = frame["expected_source"] == "forecast_p50"
    supported = np.where(from_forecast, frame["score"] > settings.ratio_min_band, frame["score"] > settings.ratio_min_z)
    band = frame["band_anomalous"]
    after_hours = night & over & (band | ((ratio > settings.after_hours_ratio) & supported))
    weekend_spike = weekend.to_numpy() & over & (band | ((ratio > settings.weekend_ratio) & supported))
    kind = np.select(
        [stuck, after_hours, weekend_spike, band & over, band & ~over],
        ["stuck_meter", "after_hours_load", "weekend_spike", "high_consumption", "low_consumption"],
        default="",
    )
    frame["kind"] = np.where(energy.notna() & expected.notna(), kind, "")
    return frame


def merge_spans(hours: pd.DataFrame, settings: AnomalySettings) -> pd.DataFrame:
    """Merge flagged hours of one building and kind that are at most `merge_gap_h` apart into anomalies.

    Hours in a gap between two flagged hours belong to the span: the excess is measured − expected
    over every hour from the first flagged hour to the last.
    """
    columns = ["building_id", "kind", "start", "end", "hours", "energy_kwh", "expected_kwh", "excess_kwh",
               "excess_ratio", "expected_source", "score", "severity"]
    flagged = hours[hours["kind"] != ""]
    if flagged.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    gap = pd.Timedelta(hours=settings.merge_gap_h + 1)
    by_building = {b: g for b, g in hours.groupby("building_id", sort=False)}
    for (building_id, kind), g in flagged.groupby(["building_id", "kind"], sort=True):
        ts = g["ts"].reset_index(drop=True)
        new_span = np.r_[True, (ts.diff().iloc[1:] > gap).to_numpy()]
        span_id = np.cumsum(new_span)
        whole = by_building[building_id]
        for _, span in g.groupby(span_id):
            start, last = span["ts"].min(), span["ts"].max()
            inside = whole[(whole["ts"] >= start) & (whole["ts"] <= last)]
            energy = float(inside["energy_kwh"].sum())
            expected = float(inside["expected_kwh"].sum())
            excess = energy - expected
            scores = span["score"].to_numpy(float)
            rows.append(
                {
                    "building_id": building_id,
                    "kind": kind,
                    "start": start,
                    "end": last + pd.Timedelta(hours=1),
                    "hours": int(len(inside)),
                    "energy_kwh": round(energy, 3),
                    "expected_kwh": round(expected, 3),
                    "excess_kwh": round(excess, 3),
                    "excess_ratio": round(excess / expected, 4) if expected else float("nan"),
                    "expected_source": str(span["expected_source"].mode().iloc[0]),
                    "score": round(float(scores[np.argmax(np.abs(scores))]), 3) if np.isfinite(scores).any() else float("nan"),
                }
            )
    spans = pd.DataFrame(rows)
    spans = spans[(spans["excess_kwh"].abs() >= settings.min_excess_kwh) | (spans["kind"] == "stuck_meter")]
    spans["severity"] = [severity(k, r, h, settings) for k, r, h in zip(spans["kind"], spans["excess_ratio"], spans["hours"])]
    return spans[columns].sort_values(["building_id", "start", "kind"]).reset_index(drop=True)


def severity(kind: str, excess_ratio: float, hours: int, settings: AnomalySettings) -> str:
    if kind == "stuck_meter":
        # A stuck meter hides the truth, whatever the numbers say: a day or more of it is serious.
        return "high" if hours >= 24 else "medium"
    magnitude = abs(excess_ratio) if np.isfinite(excess_ratio) else 0.0
    if magnitude >= settings.severity_high:
        return "high"
    return "medium" if magnitude >= settings.severity_medium else "low"


def detect_anomalies(
    frame: pd.DataFrame, history: pd.DataFrame, settings: AnomalySettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Anomalies in `frame` (hourly rows, forecast quantiles optional) against `history` (the weeks before).

    Returns (anomalies, scored hours). Rows without a valid energy value are never flagged.
    """
    scored = expected_energy(frame, history, settings)
    if "energy_valid" in scored.columns:
        scored.loc[~scored["energy_valid"].fillna(False).astype(bool), "energy_kwh"] = np.nan
    hours = classify_hours(scored, settings)
    return merge_spans(hours, settings), hours
