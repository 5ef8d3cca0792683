"""Seasonality-aware drift and forecast accuracy, judged with Evidently 0.7.

Energy is seasonal: a raw "last week against last month" comparison flags every change of season. Two
judgements avoid that, and both are computed here on frames:

* **Residual drift** (the one that may trigger a retrain by default): the served model's relative
  residuals, (actual − p50) / the building's mean load, in the current window against the same model
  version's residuals in the reference window, per building. A model that uses weather as an input
  absorbs a season change, so its residuals do not move; a retrofit, a new tenant or a broken schedule
  moves them. Both windows are whole weeks, so the hour-of-week mix is the same on both sides. A new
  model version starts with no reference of its own, so a retrain resets the judgement (no flapping).
* **Input drift**: the model's inputs in the current window against a *matched* reference: for each
  current row, rows of the reference window of the same building, hour of the week and outdoor
  temperature bin, drawn with replacement. What is left is a change in how a building behaves in the
  same conditions, not a change of conditions. Current rows without a match (a temperature the reference
  never saw) are left out and the coverage is reported; below `min_coverage` no judgement is made.

Scores come from Evidently's own stattests (the same code its `ValueDrift` metric runs), so figures
are cheap to compute for every check; the HTML/JSON reports are built from the same frames with the
same method and threshold when a pass is recorded. Evidently is imported inside functions: DAG files and
the CLI import this module.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

# Model inputs that are judged for drift. Energy and occupancy are divided by the building's reference
# mean so that a large building does not drown a small one in the pooled distribution.
INPUT_DRIFT_COLUMNS: tuple[str, ...] = (
    "energy_rel",
    "occupancy_rel",
    "temperature",
    "humidity",
    "solar_radiation",
    "forecast_temperature",
    "forecast_humidity",
    "forecast_solar_radiation",
)
_RELATIVE = {"energy_rel": "energy_kwh", "occupancy_rel": "occupancy"}


class DriftInputError(ValueError):
    """A frame handed to a drift or accuracy check lacks what the check needs; the message names it."""


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    score: float
    drifted: bool
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class DriftJudgement:
    """One drift comparison: per-column scores and whether the dataset counts as drifted."""

    kind: str  # input_drift | residual_drift
    method: str
    threshold: float
    columns: dict[str, ColumnDrift]
    drift_share: float | None
    drift_detected: bool
    n_reference: int
    n_current: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [c for c, d in self.columns.items() if d.drifted]

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "threshold": self.threshold,
            "drift_share": self.drift_share,
            "drift_detected": self.drift_detected,
            "drifted_columns": self.drifted_columns,
            "scores": {c: round(d.score, 6) for c, d in self.columns.items()},
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "note": self.note,
            **self.extra,
        }


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputError(f"{what}: missing column(s) {missing}; has {sorted(frame.columns)}")


def hour_of_week(frame: pd.DataFrame) -> np.ndarray:
    """Local hour of the week (0 = Monday 00:00): gold features carry local day_of_week and hour_of_day."""
    if "day_of_week" in frame.columns and "hour_of_day" in frame.columns:
        return frame["day_of_week"].to_numpy(np.int64) * 24 + frame["hour_of_day"].to_numpy(np.int64)
    _require(frame, ["ts"], "hour_of_week")
    ts = pd.DatetimeIndex(frame["ts"])
    return np.asarray(ts.dayofweek * 24 + ts.hour, dtype=np.int64)


# --------------------------------------------------------------------------------------------- stattests
def column_drift(
    reference: pd.Series, current: pd.Series, *, method: str, threshold: float, column: str | None = None
) -> ColumnDrift:
    """Evidently's stattest on one numerical column (nulls and infinities dropped, as `ValueDrift` does)."""
    ref = reference.replace([np.inf, -np.inf], np.nan).dropna().astype(float)
    cur = current.replace([np.inf, -np.inf], np.nan).dropna().astype(float)
    name = column or str(reference.name)
    if len(ref) < 2 or len(cur) < 2:
        return ColumnDrift(name, float("nan"), False, len(ref), len(cur))
    if ref.nunique() <= 1 and cur.nunique() <= 1:
        same = bool(np.isclose(ref.iloc[0], cur.iloc[0]))
        return ColumnDrift(name, 0.0 if same else float("inf"), not same, len(ref), len(cur))
    if method == "wasserstein":
        # Evidently's own formula (wasserstein_distance_norm.py), without importing the whole library
        # (tens of seconds) on every check; a test pins it to Evidently's result.
        from scipy import stats

        score = float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
        return ColumnDrift(name, score, bool(score >= threshold), len(ref), len(cur))
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    test = get_stattest(ref, cur, ColumnType.Numerical, method)
    result = test(ref, cur, ColumnType.Numerical, threshold)
    return ColumnDrift(name, float(result.drift_score), bool(result.drifted), len(ref), len(cur))


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class MatchedSample:
    reference: pd.DataFrame
    current: pd.DataFrame  # the current rows that found a match (at most the per-building quota of them)
    coverage: float  # share of current rows with at least one reference row in their stratum
    n_current: int = 0  # current rows offered, and of them with a match: coverage over chunks adds up exactly
    n_covered: int = 0
    covered_by_building: dict[str, int] = field(default_factory=dict)


def with_relative_columns(frame: pd.DataFrame, scale: pd.DataFrame) -> pd.DataFrame:
    """Add energy_rel / occupancy_rel: the value over the building's reference mean."""
    out = frame.copy()
    for rel, source in _RELATIVE.items():
        if source in out.columns and source in scale.columns:
            denominator = out["building_id"].map(scale[source]).replace(0.0, np.nan)
            out[rel] = out[source] / denominator
    return out


def building_rng(seed: int, building_id: str, stream: int = 0) -> np.random.Generator:
    """One random stream per building (and purpose): the draws do not depend on which other buildings share
    the chunk, the order storage returned the rows in, or the runner, so every chunking gives one result."""
    return np.random.default_rng([int(seed), zlib.crc32(str(building_id).encode()), int(stream)])


def matched_reference(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    temperature_bin_c: float,
    draws: int,
    seed: int = 0,
    temperature_column: str = "temperature",
    max_current_per_building: int | None = None,
) -> MatchedSample:
    """For each current row, `draws` reference rows of its building, hour of the week and temperature bin.

    Sampling with replacement gives the reference exactly the current window's mix of buildings, hours
    and temperatures, so what differs is behaviour under the same conditions. Buildings are matched one at
    a time, each with its own random stream, in (building, ts) order; `max_current_per_building` keeps at
    most that many matched current rows of a building (a seeded choice, in time order) so a portfolio's
    sample stays bounded while every building is represented.
    """
    for name, frame in (("reference", reference), ("current", current)):
        _require(frame, ["building_id", temperature_column], f"matched_reference {name}")
    if reference.empty or current.empty:
        return MatchedSample(reference.iloc[0:0], current.iloc[0:0], 0.0, len(current), 0)

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        keys = ["building_id", "ts"] if "ts" in frame.columns else ["building_id"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)

    reference, current = ordered(reference), ordered(current)

    def strata(frame: pd.DataFrame) -> pd.DataFrame:
        temp_bin = np.floor(frame[temperature_column].to_numpy(float) / temperature_bin_c)
        return pd.DataFrame(
            {"building_id": frame["building_id"].astype(str).to_numpy(), "how": hour_of_week(frame), "bin": temp_bin}
        )

    # Strata codes for the whole frame at once; a stratum's reference rows stay in row order (stable sort),
    # so each building's k-th candidate is the same whichever other buildings share the frame.
    ref_keys, cur_keys = strata(reference), strata(current)
    ref_ok = np.isfinite(ref_keys["bin"].to_numpy())
    combined = pd.concat([ref_keys[ref_ok], cur_keys], ignore_index=True)
    codes = pd.MultiIndex.from_frame(combined.fillna(-1e9)).factorize()[0]
    ref_codes = codes[: int(ref_ok.sum())]
    cur_codes = codes[int(ref_ok.sum()):].copy()
    cur_codes[~np.isfinite(cur_keys["bin"].to_numpy())] = -1
    usable = np.flatnonzero(ref_ok)
    order = np.argsort(ref_codes, kind="stable")
    sorted_codes = ref_codes[order]
    first = np.searchsorted(sorted_codes, cur_codes, side="left")
    last = np.searchsorted(sorted_codes, cur_codes, side="right")
    count = np.where(cur_codes >= 0, last - first, 0)

    ref_picks: list[np.ndarray] = []
    cur_keep: list[np.ndarray] = []
    n_covered = 0
    by_building: dict[str, int] = {}
    for building, cur_rows in current.groupby("building_id", sort=True).indices.items():
        covered = cur_rows[count[cur_rows] > 0]
        n_covered += len(covered)
        by_building[str(building)] = len(covered)
        if not len(covered):
            continue
        if max_current_per_building is not None and len(covered) > max_current_per_building:
            chosen = building_rng(seed, building, 1).choice(len(covered), max_current_per_building, replace=False)
            covered = covered[np.sort(chosen)]
        rng = building_rng(seed, building)
        starts = np.repeat(first[covered], draws)
        counts = np.repeat(count[covered], draws)
        picks = starts + (rng.random(len(starts)) * counts).astype(np.int64)
        ref_picks.append(usable[order[picks]])
        cur_keep.append(covered)
    if not n_covered:
        return MatchedSample(reference.iloc[0:0], current.iloc[0:0], 0.0, len(current), 0, by_building)
    matched = reference.iloc[np.concatenate(ref_picks)].reset_index(drop=True)
    kept = current.iloc[np.concatenate(cur_keep)].reset_index(drop=True)
    return MatchedSample(matched, kept, n_covered / len(current), len(current), n_covered, by_building)


def input_drift_scale(reference_features: pd.DataFrame) -> pd.DataFrame:
    """Per building, the reference means that energy_rel and occupancy_rel divide by."""
    return reference_features.groupby("building_id")[[c for c in _RELATIVE.values() if c in reference_features]].mean()


def judge_matched_sample(
    sample: MatchedSample,
    *,
    min_coverage: float,
    method: str,
    threshold: float,
    drift_share_threshold: float,
    columns: Sequence[str] = INPUT_DRIFT_COLUMNS,
) -> DriftJudgement:
    """The pooled input-drift judgement on a (portfolio's, merged) matched sample."""
    present = [c for c in columns if c in sample.reference.columns and c in sample.current.columns]
    extra = {
        "coverage": round(sample.coverage, 4),
        "columns_judged": present,
        "drift_share_threshold": drift_share_threshold,
    }
    if sample.coverage < min_coverage or not present:
        note = f"coverage {sample.coverage:.0%} below {min_coverage:.0%}: no judgement" if present else "no input columns"
        return DriftJudgement("input_drift", method, threshold, {}, None, False, len(sample.reference), len(sample.current), note, extra)
    scores = {
        c: column_drift(sample.reference[c], sample.current[c], method=method, threshold=threshold, column=c)
        for c in present
    }
    judged = [d for d in scores.values() if np.isfinite(d.score)]
    share = sum(d.drifted for d in judged) / len(judged) if judged else None
    detected = share is not None and share >= drift_share_threshold
    return DriftJudgement("input_drift", method, threshold, scores, share, detected, len(sample.reference), len(sample.current), "", extra)


def judge_input_drift(
    reference_features: pd.DataFrame,
    current_features: pd.DataFrame,
    *,
    temperature_bin_c: float,
    draws: int,
    min_coverage: float,
    method: str,
    threshold: float,
    drift_share_threshold: float,
    columns: Sequence[str] = INPUT_DRIFT_COLUMNS,
    seed: int = 0,
    max_current_per_building: int | None = None,
) -> tuple[DriftJudgement, MatchedSample]:
    """Input drift of the current window against the seasonality-matched reference."""
    _require(reference_features, ["building_id", "energy_kwh"], "input drift reference")
    scale = input_drift_scale(reference_features)
    reference = with_relative_columns(reference_features, scale)
    current = with_relative_columns(current_features, scale)
    sample = matched_reference(reference, current, temperature_bin_c=temperature_bin_c, draws=draws, seed=seed,
                               max_current_per_building=max_current_per_building)
    judgement = judge_matched_sample(sample, min_coverage=min_coverage, method=method, threshold=threshold,
                                     drift_share_threshold=drift_share_threshold, columns=columns)
    return judgement, sample


# --------------------------------------------------------------------------------------------- residuals
def served_pairs(forecasts: pd.DataFrame, actuals: pd.DataFrame, *, model_name: str | None = None) -> pd.DataFrame:
    """Served forecasts joined to valid actuals: per building and hour, the latest issue before the hour.

    Fallback forecasts are dropped: they are not the model's work. Columns: building_id, ts, energy_kwh,
    yhat, yhat_p10, yhat_p50, yhat_p90, model_version, issued_at, horizon_h.
    """
    _require(forecasts, ["building_id", "issued_at", "ts", "yhat_p50", "model_version"], "served_pairs forecasts")
    _require(actuals, ["building_id", "ts", "energy_kwh"], "served_pairs actuals")
    served = forecasts
    if model_name is not None and "model_name" in served.columns:
        served = served[served["model_name"] == model_name]
    if "is_fallback" in served.columns:
        served = served[~served["is_fallback"].fillna(False).astype(bool)]
    served = served[served["issued_at"] <= served["ts"]]
    served = served.sort_values(["building_id", "ts", "issued_at"]).drop_duplicates(["building_id", "ts"], keep="last")
    valid = actuals
    if "energy_valid" in valid.columns:
        valid = valid[valid["energy_valid"].fillna(False).astype(bool)]
    valid = valid[["building_id", "ts", "energy_kwh"]].dropna(subset=["energy_kwh"])
    keep = [c for c in ("yhat", "yhat_p10", "yhat_p50", "yhat_p90", "model_version", "issued_at", "horizon_h") if c in served]
    pairs = valid.merge(served[["building_id", "ts", *keep]], on=["building_id", "ts"], how="inner")
    if "yhat" not in pairs.columns:
        pairs["yhat"] = pairs["yhat_p50"]
    return pairs.sort_values(["building_id", "ts"]).reset_index(drop=True)


def with_residuals(pairs: pd.DataFrame, scale_kwh: pd.Series) -> pd.DataFrame:
    """residual_kwh = actual − p50; residual_rel = residual_kwh / the building's mean load (`scale_kwh`)."""
    out = pairs.copy()
    out["residual_kwh"] = out["energy_kwh"] - out["yhat_p50"]
    out["residual_rel"] = out["residual_kwh"] / out["building_id"].map(scale_kwh).replace(0.0, np.nan)
    return out


RESIDUAL_STATS_COLUMNS = ["building_id", "ref_pairs", "cur_pairs", "judged", "score", "drifted", "n_ref", "n_cur", "bias"]


def residual_stats(
    reference_pairs: pd.DataFrame,
    current_pairs: pd.DataFrame,
    *,
    method: str,
    threshold: float,
    min_reference_hours: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The per-building part of residual drift: one row per building with pairs in either window (pair counts,
    whether it is judged, its stattest score and verdict, its current mean relative residual), and the
    relative residuals of the judged buildings (long: building_id, ts, residual_rel). A building's row
    depends on its own pairs only, so chunks of buildings give the portfolio's rows."""
    scale = reference_pairs.groupby("building_id")["energy_kwh"].mean() if not reference_pairs.empty else pd.Series(dtype=float)
    reference = with_residuals(reference_pairs, scale) if not reference_pairs.empty else reference_pairs.assign(residual_rel=[])
    current = with_residuals(current_pairs, scale) if not current_pairs.empty else current_pairs.assign(residual_rel=[])
    ref_counts = reference.groupby("building_id").size() if not reference.empty else pd.Series(dtype=int)
    cur_counts = current.groupby("building_id").size() if not current.empty else pd.Series(dtype=int)
    ref_rows = reference.groupby("building_id").indices if not reference.empty else {}
    cur_rows = current.groupby("building_id").indices if not current.empty else {}
    rows = []
    for b in sorted(set(ref_counts.index) | set(cur_counts.index)):
        n_ref_pairs, n_cur_pairs = int(ref_counts.get(b, 0)), int(cur_counts.get(b, 0))
        judged = n_cur_pairs > 0 and n_ref_pairs >= min_reference_hours
        row = {"building_id": str(b), "ref_pairs": n_ref_pairs, "cur_pairs": n_cur_pairs, "judged": judged,
               "score": float("nan"), "drifted": False, "n_ref": 0, "n_cur": 0, "bias": float("nan")}
        if judged:
            cur_rel = current["residual_rel"].iloc[cur_rows[b]].reset_index(drop=True)
            ref_rel = reference["residual_rel"].iloc[ref_rows[b]].reset_index(drop=True)
            drift = column_drift(ref_rel, cur_rel, method=method, threshold=threshold, column=str(b))
            row.update(score=drift.score, drifted=drift.drifted, n_ref=drift.n_reference, n_cur=drift.n_current,
                       bias=round(float(cur_rel.mean()), 6))
        rows.append(row)
    stats = pd.DataFrame(rows, columns=RESIDUAL_STATS_COLUMNS)
    judged_ids = set(stats.loc[stats["judged"], "building_id"]) if len(stats) else set()
    keep = ["building_id", "ts", "residual_rel"]

    def long(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return pd.DataFrame({"building_id": pd.Series(dtype=str), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                                 "residual_rel": pd.Series(dtype=float)})
        return frame.loc[frame["building_id"].astype(str).isin(judged_ids), keep].reset_index(drop=True)

    return stats, long(reference), long(current)


def residual_judgement(
    stats: pd.DataFrame,
    reference_residuals: pd.DataFrame,
    current_residuals: pd.DataFrame,
    *,
    method: str,
    threshold: float,
    min_reference_hours: int,
    min_buildings: int,
) -> tuple[DriftJudgement, pd.DataFrame, pd.DataFrame]:
    """The portfolio's residual-drift judgement from the buildings' rows (`residual_stats`, merged over
    chunks) and their residuals in long form (all of them, or a per-building sample for the report)."""
    stats = stats.sort_values("building_id", kind="stable").reset_index(drop=True)
    judged = stats[stats["judged"].astype(bool)]
    buildings = judged["building_id"].tolist()
    skipped = sorted(stats.loc[(stats["cur_pairs"] > 0) & ~stats["judged"].astype(bool), "building_id"].tolist())

    def wide(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty or not buildings:
            return pd.DataFrame({b: pd.Series(dtype=float) for b in buildings}) if buildings else pd.DataFrame()
        frame = frame.sort_values(["building_id", "ts"], kind="stable")
        groups = frame.groupby("building_id", sort=False)["residual_rel"]
        series = {str(b): g.reset_index(drop=True) for b, g in groups}
        return pd.DataFrame({b: series.get(b, pd.Series(dtype=float)) for b in buildings})

    ref_wide, cur_wide = wide(reference_residuals), wide(current_residuals)
    scores = {r.building_id: ColumnDrift(r.building_id, float(r.score), bool(r.drifted), int(r.n_ref), int(r.n_cur))
              for r in judged.itertuples()}
    bias = {r.building_id: float(r.bias) for r in judged.itertuples()}
    extra = {"skipped_buildings": skipped, "current_mean_residual_rel": bias, "min_buildings": min_buildings}
    if not buildings:
        note = f"no building has {min_reference_hours} h of reference residuals for this model version"
        judgement = DriftJudgement("residual_drift", method, threshold, {}, None, False, int(stats["ref_pairs"].sum()),
                                   int(stats["cur_pairs"].sum()), note, extra)
        return judgement, ref_wide, cur_wide
    drifted = sum(d.drifted for d in scores.values())
    judgement = DriftJudgement("residual_drift", method, threshold, scores, drifted / len(buildings), drifted >= min_buildings,
                               int(judged["ref_pairs"].sum()), int(judged["cur_pairs"].sum()), "", extra)
    return judgement, ref_wide, cur_wide


def judge_residual_drift(
    reference_pairs: pd.DataFrame,
    current_pairs: pd.DataFrame,
    *,
    method: str,
    threshold: float,
    min_reference_hours: int,
    min_buildings: int,
) -> tuple[DriftJudgement, pd.DataFrame, pd.DataFrame]:
    """Per building: did the relative residual distribution move? Returns the judgement and wide frames.

    The wide frames have one column per building (rows are hours, padded with NaN), which is what the
    Evidently report shows: the drift share is the share of buildings whose residuals drifted.
    """
    stats, ref_long, cur_long = residual_stats(reference_pairs, current_pairs, method=method, threshold=threshold,
                                               min_reference_hours=min_reference_hours)
    return residual_judgement(stats, ref_long, cur_long, method=method, threshold=threshold,
                              min_reference_hours=min_reference_hours, min_buildings=min_buildings)


# --------------------------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class SavedReport:
    kind: str
    html_path: Path
    json_path: Path
    values: dict[str, Any]  # metric values as Evidently computed them


def _metric_values(snapshot: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for metric in snapshot.dict().get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", "")).rsplit(":", 1)[-1]
        key = f"{kind}:{config['column']}" if "column" in config else kind
        values[key] = metric.get("value")
    return values


def _save(snapshot: Any, folder: Path, kind: str) -> SavedReport:
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / f"{kind}.html", folder / f"{kind}.json"
    snapshot.save_html(str(html_path))
    snapshot.save_json(str(json_path))
    return SavedReport(kind, html_path, json_path, _metric_values(snapshot))


def drift_report(
    judgement: DriftJudgement, reference: pd.DataFrame, current: pd.DataFrame, folder: Path
) -> SavedReport | None:
    """The Evidently DataDriftPreset report for a judgement, with the judgement's method and threshold."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [c for c in judgement.columns if c in reference.columns and c in current.columns]
    if not columns:
        return None
    definition = DataDefinition(numerical_columns=columns)
    report = Report(
        [DataDriftPreset(columns=columns, method=judgement.method, threshold=judgement.threshold, drift_share=_share_bar(judgement))],
        include_tests=False,
    )
    snapshot = report.run(
        Dataset.from_pandas(current[columns].astype(float), data_definition=definition),
        Dataset.from_pandas(reference[columns].astype(float), data_definition=definition),
    )
    return _save(snapshot, folder, judgement.kind)


def _share_bar(judgement: DriftJudgement) -> float:
    # The residual judgement counts buildings, the preset counts columns: show the same bar.
    if judgement.kind == "residual_drift" and judgement.columns:
        return max(min(judgement.extra.get("min_buildings", 1) / len(judgement.columns), 1.0), 1e-9)
    return float(judgement.extra.get("drift_share_threshold", 0.5))


def accuracy_report(pairs: pd.DataFrame, folder: Path) -> SavedReport | None:
    """Evidently RegressionPreset of served p50 forecasts against actuals (pooled over buildings)."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    if pairs.empty:
        return None
    frame = pd.DataFrame(
        {"energy_kwh": pairs["energy_kwh"].astype(float), "yhat_p50": pairs["yhat_p50"].astype(float)}
    )
    definition = DataDefinition(
        numerical_columns=["energy_kwh", "yhat_p50"],
        regression=[Regression(target="energy_kwh", prediction="yhat_p50")],
    )
    snapshot = Report([RegressionPreset()], include_tests=False).run(
        Dataset.from_pandas(frame, data_definition=definition), None
    )
    return _save(snapshot, folder, "accuracy")


def summary_json(payload: dict[str, Any]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        if isinstance(value, (pd.Timestamp,)):
            return value.isoformat()
        return str(value)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(payload), sort_keys=True, default=default)
