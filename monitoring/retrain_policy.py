"""The retrain decision: a pure function of the checks so far, the current check and the policy.

A `Check` is what one monitoring pass measured for the production model: accuracy over the last days
(portfolio and per building, ASHRAE Guideline 14 CV(RMSE) and NMBE) and drift (residuals, inputs).
`decide` turns the history of checks into a typed `Decision`; every decision, retrain or hold, is
recorded with its reasons and figures by the shell (`monitoring.monitor`).

Triggers (any one):
* accuracy: CV(RMSE) over `accuracy_window_days` above `cv_rmse_threshold`, or more than
  `relative_degradation` above the CV(RMSE) recorded at promotion; per building also |NMBE| above
  `nmbe_threshold` (a biased building is the signature of a retrofit or a new tenant);
* drift: drift detected (of the kind `drift_trigger` names) in `drift_consecutive_checks` consecutive
  checks of the same model version since the last retrain.
Guards (each turns a trigger into a hold, with the reason): at most one retrain per `cooldown_days`,
and at least `min_new_hours` of new data since the last training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

import pandas as pd

from wattflow.settings import MonitorSettings


@dataclass(frozen=True)
class AccuracyFigures:
    n_hours: int
    mae: float | None
    rmse: float | None
    cv_rmse: float | None
    nmbe: float | None


@dataclass(frozen=True)
class Check:
    as_of: datetime
    model_name: str
    model_version: str | None
    accuracy: AccuracyFigures
    building_accuracy: dict[str, AccuracyFigures] = field(default_factory=dict)
    residual_drift: bool | None = None  # None: not judged (no reference for this model version yet)
    residual_drift_share: float | None = None
    drifted_buildings: tuple[str, ...] = ()
    input_drift: bool | None = None
    input_drift_share: float | None = None
    input_coverage: float | None = None
    new_data_hours: int = 0

    def drift_detected(self, trigger: str) -> bool:
        residual, inputs = bool(self.residual_drift), bool(self.input_drift)
        return {"residuals": residual, "inputs": inputs, "either": residual or inputs}[trigger]

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["as_of"] = pd.Timestamp(self.as_of).isoformat()
        raw["drifted_buildings"] = list(self.drifted_buildings)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Check":
        return cls(
            as_of=pd.Timestamp(raw["as_of"]).to_pydatetime(),
            model_name=raw["model_name"],
            model_version=raw.get("model_version"),
            accuracy=AccuracyFigures(**raw["accuracy"]),
            building_accuracy={b: AccuracyFigures(**a) for b, a in (raw.get("building_accuracy") or {}).items()},
            residual_drift=raw.get("residual_drift"),
            residual_drift_share=raw.get("residual_drift_share"),
            drifted_buildings=tuple(raw.get("drifted_buildings") or ()),
            input_drift=raw.get("input_drift"),
            input_drift_share=raw.get("input_drift_share"),
            input_coverage=raw.get("input_coverage"),
            new_data_hours=int(raw.get("new_data_hours") or 0),
        )


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reasons: list[str]
    figures: dict[str, Any]

    @property
    def label(self) -> str:
        return "retrain" if self.retrain else "hold"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _accuracy_triggers(
    current: Check, promotion_metrics: Mapping[str, Any] | None, policy: MonitorSettings
) -> tuple[list[str], list[str], dict[str, Any]]:
    triggers: list[str] = []
    notes: list[str] = []
    figures: dict[str, Any] = {}
    days = policy.accuracy_window_days
    promotion = promotion_metrics or {}
    acc = current.accuracy
    if acc.n_hours < policy.min_accuracy_hours or acc.cv_rmse is None:
        notes.append(
            f"accuracy not judged: {acc.n_hours} h of served forecasts with actuals (< {policy.min_accuracy_hours})"
        )
    else:
        if acc.cv_rmse > policy.cv_rmse_threshold:
            triggers.append(
                f"portfolio CV(RMSE) {acc.cv_rmse:.3f} over the last {days} days exceeds {policy.cv_rmse_threshold:.3f}"
            )
        promoted = promotion.get("cv_rmse")
        if promoted:
            ratio = acc.cv_rmse / float(promoted) - 1.0
            figures["portfolio_degradation"] = round(ratio, 4)
            if ratio > policy.relative_degradation:
                triggers.append(
                    f"portfolio CV(RMSE) {acc.cv_rmse:.3f} is {ratio:.0%} above {float(promoted):.3f} at promotion "
                    f"(limit +{policy.relative_degradation:.0%})"
                )
    per_building_promotion = promotion.get("per_building") or {}
    flagged: dict[str, list[str]] = {}
    for building_id, b in sorted(current.building_accuracy.items()):
        if b.n_hours < policy.min_accuracy_hours or b.cv_rmse is None:
            continue
        why: list[str] = []
        if b.cv_rmse > policy.cv_rmse_threshold:
            why.append(f"CV(RMSE) {b.cv_rmse:.3f} > {policy.cv_rmse_threshold:.3f}")
        if b.nmbe is not None and abs(b.nmbe) > policy.nmbe_threshold:
            side = "over" if b.nmbe < 0 else "under"
            why.append(f"NMBE {b.nmbe:+.3f} beyond ±{policy.nmbe_threshold:.3f} (model {side}-predicts)")
        promoted_b = (per_building_promotion.get(building_id) or {}).get("cv_rmse")
        if promoted_b and b.cv_rmse / float(promoted_b) - 1.0 > policy.relative_degradation:
            why.append(f"CV(RMSE) {b.cv_rmse:.3f} is {b.cv_rmse / float(promoted_b) - 1.0:.0%} above {float(promoted_b):.3f} at promotion")
        if why:
            flagged[building_id] = why
            triggers.append(f"building {building_id} over the last {days} days: " + "; ".join(why))
    figures["buildings_degraded"] = sorted(flagged)
    return triggers, notes, figures


def _drift_streak(history: Sequence[Check], current: Check, last_retrain_at: datetime | None, trigger: str) -> int:
    """Consecutive drifted checks of the current model version since the last retrain, ending now."""
    relevant = sorted(
        (
            c
            for c in history
            if c.as_of < current.as_of
            and c.model_version == current.model_version
            and (last_retrain_at is None or c.as_of > last_retrain_at)
        ),
        key=lambda c: c.as_of,
    )
    streak = 0
    for check in [*relevant, current][::-1]:
        if not check.drift_detected(trigger):
            break
        streak += 1
    return streak


def decide(
    history_of_checks: Sequence[Check],
    current_check: Check,
    last_retrain_at: datetime | None,
    promotion_metrics: Mapping[str, Any] | None,
    policy: MonitorSettings,
) -> Decision:
    """Retrain or hold, with every reason and the figures behind it."""
    current = current_check
    triggers, notes, figures = _accuracy_triggers(current, promotion_metrics, policy)
    streak = _drift_streak(history_of_checks, current, last_retrain_at, policy.drift_trigger)
    if streak >= policy.drift_consecutive_checks:
        where = f" (buildings: {', '.join(current.drifted_buildings)})" if current.drifted_buildings else ""
        triggers.append(f"{policy.drift_trigger} drift in {streak} consecutive checks{where}")
    elif current.drift_detected(policy.drift_trigger):
        notes.append(f"{policy.drift_trigger} drift in {streak} of {policy.drift_consecutive_checks} consecutive checks needed")

    figures.update(
        {
            "check": current.to_dict(),
            "drift_streak": streak,
            "promotion_cv_rmse": (promotion_metrics or {}).get("cv_rmse"),
            "policy": policy.model_dump(exclude={"anomalies"}),
        }
    )
    days_since = None
    if last_retrain_at is not None:
        days_since = (pd.Timestamp(current.as_of) - pd.Timestamp(last_retrain_at)) / pd.Timedelta(days=1)
        figures["days_since_last_retrain"] = round(float(days_since), 3)

    if not triggers:
        summary = (
            f"no trigger: CV(RMSE) {_fmt(current.accuracy.cv_rmse)}, NMBE {_fmt(current.accuracy.nmbe)}, "
            f"drift streak {streak}/{policy.drift_consecutive_checks}"
        )
        return Decision(False, [summary, *notes], figures)
    if days_since is not None and days_since < policy.cooldown_days:
        return Decision(
            False,
            [f"cooldown: last retrain {days_since:.1f} days ago (< {policy.cooldown_days})", *(f"would retrain: {t}" for t in triggers), *notes],
            figures,
        )
    if current.new_data_hours < policy.min_new_hours:
        return Decision(
            False,
            [
                f"not enough new data: {current.new_data_hours} h since the last training (< {policy.min_new_hours})",
                *(f"would retrain: {t}" for t in triggers),
                *notes,
            ],
            figures,
        )
    return Decision(True, [*triggers, *notes], figures)


def window_bounds(as_of: datetime, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    end = pd.Timestamp(as_of)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    return end - pd.Timedelta(days=days), end


def last_retrain(history: Sequence[tuple[datetime, str]]) -> datetime | None:
    """The as_of of the newest 'retrain' decision in (as_of, decision) pairs."""
    retrains = [as_of for as_of, decision in history if decision == "retrain"]
    return max(retrains) if retrains else None


__all__ = ["AccuracyFigures", "Check", "Decision", "decide", "window_bounds", "last_retrain"]
