"""How often the default monitoring policy and anomaly detector alarm on real meters with nothing planted.

The evidence for the monitoring defaults (`wattflow/settings.py` `monitor`, `monitor.anomalies`): the same
daily loop the policy tests run on the simulator (`tests/unit/test_monitoring_policy.py`), on the real
Cambridge University Estates buildings (hourly meters, Met Office weather; gold's weather forecast is the
persistence forecast, as in `bench/real_portfolio.py`). The buildings are split into portfolios of
`--group` buildings; each gets `monitoring.synthetic.TowtForecaster` fitted on the first `--train-days`,
served day-ahead, and checked every midnight for `--check-days` with the default policy, retraining (refit
on the last 28 days, the newest 7 weighted 8x, as the tests do) when it says so. Anomalies: the default
detector on each week of the checked span against the four weeks before it, with the forecast band and
without (the time-of-week-and-temperature baseline).

Nothing is planted in real data, but real buildings do change (term ends, holidays, works), so an alarm
here is not always false: the figures bound the false-alarm rate from above.

    python bench/monitor_real.py [--start 2018-01-08] [--group 5] [--forecaster towt|yardstick] [--json PATH]

(`--forecaster yardstick` was written in session 7 but its first run, 10 buildings on a machine at load 10-14, was
still preparing a year of history per building when its 20-minute limit ended: unmeasured so far.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODEL = "building_energy_lstm"


class YardstickForecaster:
    """The gradient-boosting yardstick (`ml/yardstick.py`: calendar, weather forecast, energy 24-168 h before)
    as a served champion: fitted on the year before the origin but its last `holdout_days`, whose
    out-of-sample residuals per building give the p10/p90 offsets, then refitted on the whole year."""

    def __init__(self, features: pd.DataFrame, end: pd.Timestamp, history_days: int = 365, holdout_days: int = 28):
        from sklearn.ensemble import HistGradientBoostingRegressor

        from ml.yardstick import FEATURES, yardstick_table

        self.columns = list(FEATURES)
        self.table = yardstick_table(features)
        self.table["hour"] = self.table["hour"].astype("datetime64[ns, UTC]")
        usable = self.table["target"].notna() & self.table["energy_168h_before"].notna()
        begin, cut = end - pd.Timedelta(days=history_days), end - pd.Timedelta(days=holdout_days)

        def fit(lo, hi):
            rows = self.table[usable & (self.table["hour"] >= lo) & (self.table["hour"] < hi)]
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0,
                                                  categorical_features=[self.columns.index("building")])
            return model.fit(rows[self.columns], rows["target"])

        held = self.table[usable & (self.table["hour"] >= cut) & (self.table["hour"] < end)]
        residual = held["target"] - fit(begin, cut).predict(held[self.columns])
        self.quantiles = residual.groupby(held["building_id"].astype(str)).quantile([0.1, 0.9]).unstack()
        self.model = fit(begin, end)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        keys = frame[["building_id", "ts"]].astype({"building_id": str})
        rows = keys.merge(self.table.drop(columns=["ts"]).astype({"building_id": str}), left_on=["building_id", "ts"],
                          right_on=["building_id", "hour"], how="left")
        p50 = np.clip(self.model.predict(rows[self.columns]), 0.0, None)
        q = self.quantiles.reindex(rows["building_id"])
        return pd.DataFrame({"building_id": keys["building_id"].to_numpy(), "ts": keys["ts"].to_numpy(), "yhat_p50": p50,
                             "yhat_p10": np.clip(p50 + q[0.1].to_numpy(), 0.0, None), "yhat_p90": p50 + q[0.9].to_numpy()})


def make_forecaster(kind: str, features: pd.DataFrame, end: pd.Timestamp, train_days: int):
    from monitoring.synthetic import TowtForecaster

    if kind == "yardstick":
        return YardstickForecaster(features, end)
    return TowtForecaster.fit(features, end - pd.Timedelta(days=train_days), end)


def daily_policy(features, timezones, start, train_days, check_days, policy, kind):
    from monitoring.check import assess
    from monitoring.retrain_policy import decide
    from monitoring.synthetic import TowtForecaster, served_forecasts

    day = lambda n: start + pd.Timedelta(days=n)  # noqa: E731
    model = make_forecaster(kind, features, day(train_days), train_days)
    end = day(train_days + check_days + 1)
    forecasts = served_forecasts(features, model, start=day(train_days), end=end, model_version="1", timezones=timezones)
    history, retrains, drift_flags, checks, last_retrain, current, n = [], [], 0, 0, None, "1", 1
    for d in range(train_days + 1, train_days + check_days + 1):
        as_of = day(d)
        check = assess(features, forecasts, as_of=as_of, model_name=MODEL, model_version=current, policy=policy,
                       data_since=last_retrain or day(train_days)).check
        decision = decide(history, check, last_retrain, {}, policy)
        history.append(check)
        checks += 1
        drift_flags += len(check.drifted_buildings)
        if decision.retrain:
            retrains.append((str(as_of.date()), decision.reasons[0]))
            last_retrain, n = check.as_of, n + 1
            current = str(n)
            model = (YardstickForecaster(features, as_of) if kind == "yardstick" else
                     TowtForecaster.fit(features, as_of - pd.Timedelta(days=28), as_of, recent_days=7, recent_weight=8.0))
            newer = served_forecasts(features, model, start=as_of, end=end, model_version=current, timezones=timezones)
            forecasts = pd.concat([forecasts[forecasts["ts"] < as_of], newer], ignore_index=True)
    return retrains, drift_flags, checks, [c.accuracy.cv_rmse for c in history if c.accuracy.cv_rmse is not None]


def weekly_anomalies(features, forecasts, start, train_days, check_days, settings):
    from monitoring.anomalies import detect_anomalies

    found = {"band": Counter(), "baseline": Counter()}
    weeks = 0
    for w in range(check_days // 7):
        since = start + pd.Timedelta(days=train_days + 7 * w)
        until = since + pd.Timedelta(days=7)
        history = features[(features["ts"] < since) & (features["ts"] >= since - pd.Timedelta(weeks=4))]
        window = features[(features["ts"] >= since) & (features["ts"] < until)]
        banded = window.merge(forecasts[["building_id", "ts", "yhat_p10", "yhat_p50", "yhat_p90"]], on=["building_id", "ts"], how="left")
        for label, frame in (("band", banded), ("baseline", window)):
            anomalies, _ = detect_anomalies(frame, history, settings)
            found[label].update(anomalies["kind"])
        weeks += 1
    return found, weeks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2018-01-08")
    parser.add_argument("--train-days", type=int, default=28)
    parser.add_argument("--check-days", type=int, default=42)
    parser.add_argument("--buildings", type=int, default=0, help="first N buildings of the archive (0 = all)")
    parser.add_argument("--group", type=int, default=5)
    parser.add_argument("--forecaster", choices=("towt", "yardstick"), default="towt",
                        help="towt: the tests' TowtForecaster on --train-days; yardstick: gradient boosting on the year before")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from bench.real_portfolio import ARCHIVE, cambridge_gold
    from lakehouse.sources.cambridge import _Archive
    from monitoring.synthetic import served_forecasts
    from wattflow.settings import get_settings

    settings = get_settings()
    t = time.perf_counter()
    start = pd.Timestamp(args.start, tz="UTC")
    end = start + pd.Timedelta(days=args.train_days + args.check_days + 2)
    numbers = _Archive(ARCHIVE).building_numbers()
    numbers = numbers[: args.buildings] if args.buildings else numbers
    history = pd.Timedelta(days=400 if args.forecaster == "yardstick" else 8)
    gold, timezones = cambridge_gold(settings, numbers, str((start - history).date()), str(end.date()))
    if args.forecaster == "towt":
        gold = gold[gold["ts"] >= start - pd.Timedelta(days=1)]
    # An outage (the archive writes 0 for missing readings) is not load: leave those hours out as gold would.
    gold["energy_valid"] = gold["energy_valid"].fillna(False).astype(bool) & (gold["energy_kwh"] > 0)
    ids = sorted(gold["building_id"].unique())
    prepare_s = time.perf_counter() - t

    policy = settings.monitor
    groups = [ids[i:i + args.group] for i in range(0, len(ids), args.group)]
    portfolio_rows, kinds = [], Counter()
    anomalies = {"band": Counter(), "baseline": Counter()}
    building_weeks, building_checks, drift_flags, cv = 0, 0, 0, []
    for group in groups:
        features = gold[gold["building_id"].isin(group)].reset_index(drop=True)
        retrains, flags, checks, cvs = daily_policy(features, timezones, start, args.train_days, args.check_days, policy,
                                                    args.forecaster)
        for _, reason in retrains:
            kinds["residual drift" if reason.startswith("residuals drift") else "CV(RMSE)" if "CV(RMSE)" in reason
                  else "NMBE" if "NMBE" in reason else reason.split(":")[0]] += 1
        portfolio_rows.append({"buildings": group, "retrains": retrains})
        building_checks += checks * len(group)
        drift_flags += flags
        cv += cvs
        model = make_forecaster(args.forecaster, features, start + pd.Timedelta(days=args.train_days), args.train_days)
        forecasts = served_forecasts(features, model, start=start + pd.Timedelta(days=args.train_days),
                                     end=start + pd.Timedelta(days=args.train_days + args.check_days), timezones=timezones)
        found, weeks = weekly_anomalies(features, forecasts, start, args.train_days, args.check_days, settings.monitor.anomalies)
        for label in anomalies:
            anomalies[label].update(found[label])
        building_weeks += weeks * len(group)

    months = args.check_days / 30.4
    n_retrains = sum(len(r["retrains"]) for r in portfolio_rows)
    result = {
        "data": "cambridge-estates", "forecaster": args.forecaster, "start": args.start, "train_days": args.train_days, "check_days": args.check_days,
        "buildings": len(ids), "portfolios": len(groups), "group": args.group,
        "retrains": n_retrains, "retrains_per_portfolio_month": round(n_retrains / len(groups) / months, 2),
        "retrain_reasons": dict(kinds),
        "residual_drift_flags_per_building_check": round(drift_flags / building_checks, 3),
        "median_portfolio_cv_rmse": round(float(np.median(cv)), 3) if cv else None,
        "anomalies_per_building_week": {k: round(sum(v.values()) / building_weeks, 2) for k, v in anomalies.items()},
        "anomaly_kinds": {k: dict(v) for k, v in anomalies.items()},
        "portfolios_detail": portfolio_rows,
        "prepare_s": round(prepare_s, 1), "total_s": round(time.perf_counter() - t, 1),
    }
    rows = [
        ("buildings / portfolios of", f"{len(ids)} / {args.group}"),
        ("forecaster", args.forecaster),
        ("span", f"train {args.train_days} d from {args.start}, {args.check_days} daily checks"),
        ("retrains (per portfolio-month)", f"{n_retrains} ({result['retrains_per_portfolio_month']})"),
        ("retrain reasons", ", ".join(f"{k} {v}" for k, v in kinds.items()) or "-"),
        ("residual-drift flags per building-check", f"{result['residual_drift_flags_per_building_check']}"),
        ("median portfolio CV(RMSE)", f"{result['median_portfolio_cv_rmse']}"),
        ("anomalies per building-week, forecast band", f"{result['anomalies_per_building_week']['band']} {dict(anomalies['band'])}"),
        ("anomalies per building-week, TOWT baseline", f"{result['anomalies_per_building_week']['baseline']} {dict(anomalies['baseline'])}"),
    ]
    from bench.monitor import print_measures

    print_measures(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
