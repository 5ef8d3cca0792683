"""The retrain policy on realistic error series: a weather-aware forecaster served day after day."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from monitoring.monitor import compare_on_period
from monitoring.check import assess
from monitoring.retrain_policy import AccuracyFigures, Check, decide
from monitoring.synthetic import LinearForecaster, Retrofit, portfolio_features, served_forecasts
from wattflow.settings import MonitorSettings

BUILDINGS = tuple(f"b{i}" for i in range(5))
START = pd.Timestamp("2025-01-06", tz="UTC")
MODEL = "building_energy_lstm"


def day(n: int) -> pd.Timestamp:
    return START + pd.Timedelta(days=n)


def run_daily_checks(features, first_model, *, serve_from, first_check, last_check, policy, retrain_lookback_days=28):
    """Serve, check every midnight, and retrain (refit, serve the new version from the next hour) on demand."""
    versions = {"1": first_model}
    forecasts = served_forecasts(features, first_model, start=day(serve_from), end=day(last_check + 1), model_version="1")
    history, decisions, last_retrain_at, current = [], [], None, "1"
    for d in range(first_check, last_check + 1):
        as_of = day(d)
        check = assess(features, forecasts, as_of=as_of, model_name=MODEL, model_version=current, policy=policy,
                       data_since=last_retrain_at or day(serve_from)).check
        decision = decide(history, check, last_retrain_at, {}, policy)
        history.append(check)
        decisions.append((as_of, decision))
        if decision.retrain:
            last_retrain_at = check.as_of
            current = str(len(versions) + 1)
            versions[current] = LinearForecaster.fit(features, as_of - pd.Timedelta(days=retrain_lookback_days), as_of,
                                                     recent_days=7, recent_weight=8.0)
            newer = served_forecasts(features, versions[current], start=as_of, end=day(last_check + 1), model_version=current)
            forecasts = pd.concat([forecasts[forecasts["ts"] < as_of], newer], ignore_index=True)
    return decisions, history, versions


def test_retrofit_triggers_exactly_one_retrain_and_the_new_model_is_better_after_it():
    retrofit_day = 42
    features = portfolio_features(BUILDINGS, str(START.date()), 67, seed=3, temperature_start_c=1.0, temperature_end_c=5.0,
                                  retrofits=(Retrofit("b2", day(retrofit_day), 0.25),))
    policy = MonitorSettings()
    model = LinearForecaster.fit(features, None, day(21))
    decisions, history, versions = run_daily_checks(features, model, serve_from=21, first_check=36, last_check=66, policy=policy)

    retrains = [(as_of, d) for as_of, d in decisions if d.retrain]
    assert len(retrains) == 1, [(a.date(), d.reasons[0]) for a, d in retrains]
    retrain_at, decision = retrains[0]
    assert day(retrofit_day) < retrain_at <= day(retrofit_day + policy.accuracy_window_days)
    assert any("b2" in reason for reason in decision.reasons)
    # before the retrofit every check held, with accuracy judged
    before = [d for as_of, d in decisions if as_of <= day(retrofit_day)]
    assert before and not any(d.retrain for d in before)
    assert all(c.accuracy.cv_rmse is not None for c in history)
    # the checks inside the cooldown saw the trigger and held because of the cooldown
    cooled = [d for as_of, d in decisions if retrain_at < as_of < retrain_at + pd.Timedelta(days=policy.cooldown_days)]
    assert cooled and all(not d.retrain for d in cooled)

    # closing the loop: on the post-retrofit weeks after the retrain, the new model beats the old one
    period = features[(features["ts"] >= retrain_at) & (features["building_id"] == "b2")]
    old = versions["1"].predict(period)["yhat_p50"].to_numpy()
    new = versions["2"].predict(period)["yhat_p50"].to_numpy()
    hours = pd.DataFrame({"building_id": "b2", "actual": period["energy_kwh"].to_numpy(), "old": old, "new": new})
    n, old_mae, new_mae, improvement, improved, per_building = compare_on_period(hours, old="old", new="new", min_improvement=0.0)
    assert improved and new_mae < old_mae and improvement > 0.3
    assert n == len(period) and per_building["b2"]["new_mae"] < per_building["b2"]["old_mae"]


def test_eight_weeks_of_seasonal_change_without_drift_make_no_retrain():
    # winter to spring: the daily mean goes from 0 °C to 16 °C over eight weeks, nothing else changes
    features = portfolio_features(BUILDINGS, str(START.date()), 56, seed=11, temperature_start_c=0.0, temperature_end_c=16.0)
    assert features.groupby(features["ts"].dt.isocalendar().week)["temperature"].mean().diff().dropna().gt(0).sum() >= 5
    policy = MonitorSettings()
    model = LinearForecaster.fit(features, None, day(14))
    decisions, history, _ = run_daily_checks(features, model, serve_from=14, first_check=17, last_check=56, policy=policy)

    assert len(decisions) == 40
    assert [d.reasons for _, d in decisions if d.retrain] == []
    # the checks really judged: accuracy every day, residual drift once a reference existed
    assert all(c.accuracy.n_hours >= policy.min_accuracy_hours for c in history)
    assert sum(c.residual_drift is not None for c in history) >= 25
    # a raw (unmatched, residual-free) comparison would have seen the season: temperature moved a lot
    first, last = features[features["ts"] < day(14)], features[features["ts"] >= day(49)]
    assert last["temperature"].mean() - first["temperature"].mean() > 10


def _check(as_of: str, *, cv=0.1, nmbe=0.0, residual=False, version="1", hours=168, new_hours=500, buildings=None) -> Check:
    return Check(
        as_of=datetime.fromisoformat(as_of).replace(tzinfo=timezone.utc), model_name=MODEL, model_version=version,
        accuracy=AccuracyFigures(hours, 1.0, 1.2, cv, nmbe), building_accuracy=buildings or {},
        residual_drift=residual, new_data_hours=new_hours,
    )


def test_decide_triggers_and_guards():
    policy = MonitorSettings(cv_rmse_threshold=0.25, relative_degradation=0.25, cooldown_days=7, min_new_hours=168,
                             drift_consecutive_checks=3)
    # absolute CV(RMSE)
    assert decide([], _check("2025-03-01", cv=0.3), None, {}, policy).retrain
    # relative to promotion: 0.13 is 30% above 0.10
    relative = decide([], _check("2025-03-01", cv=0.13), None, {"cv_rmse": 0.10}, policy)
    assert relative.retrain and "30% above" in relative.reasons[0]
    assert not decide([], _check("2025-03-01", cv=0.12), None, {"cv_rmse": 0.10}, policy).retrain
    # per-building bias
    biased = _check("2025-03-01", buildings={"b7": AccuracyFigures(168, 2.0, 2.5, 0.14, -0.13)})
    assert decide([], biased, None, {}, policy).reasons[0].startswith("building b7")
    # too few hours: accuracy is not judged
    assert not decide([], _check("2025-03-01", cv=0.9, hours=10), None, {}, policy).retrain
    # cooldown and minimum of new data turn a trigger into a hold, with the reason
    cooled = decide([], _check("2025-03-05", cv=0.3), datetime(2025, 3, 1, tzinfo=timezone.utc), {}, policy)
    assert not cooled.retrain and cooled.reasons[0].startswith("cooldown: last retrain 4.0 days ago")
    starved = decide([], _check("2025-03-05", cv=0.3, new_hours=100), None, {}, policy)
    assert not starved.retrain and starved.reasons[0].startswith("not enough new data: 100 h")
    # drift must persist for 3 consecutive checks of the same version since the last retrain
    drifted = [_check("2025-03-01", residual=True), _check("2025-03-02", residual=True)]
    assert decide(drifted, _check("2025-03-03", residual=True), None, {}, policy).retrain
    assert not decide(drifted[1:], _check("2025-03-03", residual=True), None, {}, policy).retrain
    broken = [_check("2025-03-01", residual=True), _check("2025-03-02", residual=False)]
    assert not decide(broken, _check("2025-03-03", residual=True), None, {}, policy).retrain
    other_version = [_check("2025-03-01", residual=True, version="0"), _check("2025-03-02", residual=True, version="0")]
    held = decide(other_version, _check("2025-03-03", residual=True), None, {}, policy)
    assert not held.retrain and held.figures["drift_streak"] == 1


def test_check_round_trips_through_its_record():
    check = _check("2025-03-01", buildings={"b1": AccuracyFigures(100, 1.0, 1.1, 0.2, 0.01)})
    assert Check.from_dict(check.to_dict()) == check


def test_compare_on_period_refuses_an_empty_period():
    with pytest.raises(ValueError, match="no scored hours"):
        compare_on_period(pd.DataFrame({"building_id": [], "actual": [], "old": [], "new": []}), old="old", new="new",
                          min_improvement=0.0)
