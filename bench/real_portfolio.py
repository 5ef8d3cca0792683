"""Day-ahead accuracy on a real portfolio: the Cambridge University Estates buildings (2016-2019).

One global model for the portfolio, trained on [--train-start, --train-end) of every building but the
cold-start ones, backtested day-ahead over [--train-end, --test-end) at each local midnight. Every row is
scored on the same hours: the model, persistence 24 h, seasonal naive 168 h, the persistence ensemble
(mean of the same hour over the previous 7 days) and the gradient-boosting yardstick (ml/yardstick.py).
Per building: CV(RMSE) (= NRMSE), NMBE, MAE; across buildings the median with a bootstrap 95% interval
(as BuildingsBench aggregates), the p10-p90 coverage, and the cold start: buildings held out of training
that join with four weeks of their own history, forecast by the portfolio model at once.

The archive has no issued weather forecasts (its "prediction" columns are future observations), so gold's
forecast inputs are the documented persistence weather forecast: the observation at the same hour of the
previous day (`forecast_source` = persistence), never the observation of the hour being forecast.

    python bench/real_portfolio.py [--buildings N] [--cold-start K] [--epochs E] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ARCHIVE = REPO / "data" / "cambridge-estates" / "cambridge-estates-2016to2019.zip"
ROWS = ("model", "persistence_24h", "seasonal_naive_168h", "persistence_ensemble", "gradient_boosting")
COLD_START_HISTORY = pd.Timedelta(days=28)


def cambridge_gold(settings, buildings=None, start=None, end=None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Archive -> bronze records -> checked silver hours -> gold features, in memory (no Delta, no GE)."""
    from lakehouse.curation import readings_to_hourly
    from lakehouse.gold import hourly_to_features
    from lakehouse.sources.cambridge import cambridge_records

    records = cambridge_records(ARCHIVE, buildings=buildings, start=start, end=end)
    readings = records.readings.to_pandas()
    landed = pd.Timestamp(end or "2020-01-01", tz="UTC")
    readings["ingested_at"] = landed
    weather = records.weather.to_pandas().assign(ingested_at=landed, issued_at=lambda w: w["ts"])
    hourly, _, _ = readings_to_hourly(readings, records.registry, settings, weather=weather, validate=False,
                                      start=start, end=end)
    gold = hourly_to_features(hourly, records.registry, settings)
    return gold.sort_values(["building_id", "ts"]).reset_index(drop=True), {b.building_id: b.timezone for b in records.registry}


def per_building(hours: pd.DataFrame, rows: tuple[str, ...], p: int) -> pd.DataFrame:
    from ml.metrics import accuracy

    records = []
    for building, one in hours[hours["scored"]].groupby("building_id"):
        actual = one["actual"].to_numpy()
        for row in rows:
            a = accuracy(actual, one[row].to_numpy(), p=p)
            records.append({"building_id": building, "forecast": row, "cv_rmse": a.cv_rmse, "nmbe": a.nmbe,
                            "mae": a.mae, "n_hours": a.n_hours})
    return pd.DataFrame(records)


def median_with_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median across buildings and a bootstrap 95% interval (buildings resampled with replacement)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    boots = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    return float(np.median(values)), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_from_delta(warm_gold, settings, spec, params, timezones, train_end, args):
    """The streamed path (ml/training_stream.py) as `train_and_register` runs it: the gold frame is written
    to a Delta table under WATTFLOW_HOME, then trained from in shards with at most --windows-per-epoch
    windows an epoch (one use type, university, so stratified over buildings)."""
    import pyarrow as pa

    from lakehouse.engine import get_engine
    from lakehouse.schemas import FEATURES
    from ml.training_stream import gold_buildings, train_streamed

    engine = get_engine(settings)
    engine.upsert(FEATURES, pa.Table.from_pandas(warm_gold, preserve_index=False))
    version = engine.version(FEATURES)
    found, first_ts, _ = gold_buildings(engine, version)
    return train_streamed(
        engine, spec, params, version=version, buildings=found, first_ts=first_ts, timezones=timezones,
        use_types=None, start=None, train_end=train_end, stride_h=args.stride_h,
        validation_fraction=settings.model.validation_fraction, windows_per_epoch=args.windows_per_epoch,
        shard_buildings=settings.model.train_shard_buildings,
    )


def run(args) -> dict:
    from ml.backtest import backtest
    from ml.model import ModelParams
    from ml.pipeline import spec_from_settings, train_model
    from ml.yardstick import gradient_boosting_yardstick
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    from lakehouse.sources.cambridge import _Archive

    numbers = _Archive(ARCHIVE).building_numbers()
    chosen = numbers[: args.buildings] if args.buildings else numbers
    # Cold-start buildings: every k-th of the chosen ones, so they span the portfolio's sizes.
    step = max(1, len(chosen) // args.cold_start) if args.cold_start else 0
    cold = [chosen[i] for i in range(step - 1, len(chosen), step)][: args.cold_start] if step else []
    gold, timezones = cambridge_gold(settings, chosen, args.train_start, args.test_end)
    timings["prepare_s"] = time.perf_counter() - t
    train_end, test_end = pd.Timestamp(args.train_end, tz="UTC"), pd.Timestamp(args.test_end, tz="UTC")
    cold_ids = {f"ucam-{n}" for n in cold}
    ts = pd.to_datetime(gold["ts"], utc=True)
    warm_gold = gold[~gold["building_id"].isin(cold_ids)]
    # A cold-start building has only four weeks of history before the test period.
    cold_gold = gold[gold["building_id"].isin(cold_ids) & (ts >= train_end - COLD_START_HISTORY)]

    spec = spec_from_settings(settings)
    params = ModelParams.from_settings(settings.model, epochs=args.epochs)
    t = time.perf_counter()
    if args.windows_per_epoch:
        trained = train_from_delta(warm_gold, settings, spec, params, timezones, train_end, args)
    else:
        trained = train_model(warm_gold, spec, params, timezones=timezones, train_end=train_end, stride_h=args.stride_h,
                              validation_fraction=settings.model.validation_fraction)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    result = backtest(warm_gold, {"model": trained.predictor()}, start=train_end, end=test_end, timezones=timezones,
                      ashrae_p=settings.model.ashrae_p)
    hours = result.hours
    timings["backtest_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = hours[hours["scored"]]
    hours.loc[hours["scored"], "gradient_boosting"] = gradient_boosting_yardstick(warm_gold, train_end, scored)
    hours["gradient_boosting"] = hours["gradient_boosting"].astype(float)
    timings["yardstick_s"] = time.perf_counter() - t
    table = per_building(hours, ROWS, settings.model.ashrae_p)

    inside = (scored["actual"] >= scored["model_p10"]) & (scored["actual"] <= scored["model_p90"]) if "model_p10" in scored else None
    coverage = float(inside.mean()) if inside is not None else float("nan")

    cold_result = None
    if cold_ids:
        cold_bt = backtest(cold_gold, {"model": trained.predictor()}, start=train_end, end=test_end, timezones=timezones,
                           ashrae_p=settings.model.ashrae_p)
        cold_result = per_building(cold_bt.hours, ("model", "persistence_24h", "persistence_ensemble"), settings.model.ashrae_p)

    medians, ci95 = {}, {}
    for row in ROWS:
        values = table.loc[table["forecast"] == row, "cv_rmse"].to_numpy()
        m, lo, hi = median_with_ci(values)
        medians[row], ci95[row] = m, [lo, hi]
    out = {
        "buildings": int(table["building_id"].nunique()),
        "median_cv_rmse": medians,
        "ci95": ci95,
        "median_nmbe": {row: float(table.loc[table["forecast"] == row, "nmbe"].median()) for row in ROWS},
        "median_mae": {row: float(table.loc[table["forecast"] == row, "mae"].median()) for row in ROWS},
        "p10_p90_coverage": coverage,
        "cold_start_buildings": sorted(cold_ids),
        "cold_start_median_cv_rmse": float(cold_result.loc[cold_result["forecast"] == "model", "cv_rmse"].median()) if cold_result is not None else None,
        "cold_start_persistence_ensemble_median_cv_rmse": float(cold_result.loc[cold_result["forecast"] == "persistence_ensemble", "cv_rmse"].median()) if cold_result is not None else None,
        "scored_hours": int(hours["scored"].sum()),
        "window_spec": {"history_features": list(trained.spec.history_features),
                        "future_features": list(trained.spec.future_features),
                        "dropped_features": trained.spec.extra.get("dropped_features", [])},
        "weather_forecast": {str(k): int(v) for k, v in gold["forecast_source"].value_counts(dropna=False).items()},
        "epochs_run": trained.epochs_run,
        "n_train_windows": trained.n_train_windows,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "per_building": table.to_dict("records"),
    }
    if cold_result is not None:
        out["cold_start_per_building"] = cold_result.to_dict("records")
    return out


def print_table(out: dict) -> None:
    print(f"\nCambridge Estates: {out['buildings']} buildings, {out['scored_hours']:,} scored hours, day-ahead at local midnight")
    print(f"{'forecast':<22}{'median CV(RMSE)':>16}{'95% CI':>18}{'median NMBE':>13}{'median MAE':>12}")
    for row in ROWS:
        lo, hi = out["ci95"][row]
        print(f"{row:<22}{out['median_cv_rmse'][row]:>16.1%}{f'{lo:.1%}–{hi:.1%}':>18}{out['median_nmbe'][row]:>+13.1%}{out['median_mae'][row]:>12.2f}")
    print(f"p10–p90 coverage: {out['p10_p90_coverage']:.1%}")
    if out["cold_start_median_cv_rmse"] is not None:
        print(f"cold start ({len(out['cold_start_buildings'])} buildings, 4 weeks of history): model {out['cold_start_median_cv_rmse']:.1%}, "
              f"persistence ensemble {out['cold_start_persistence_ensemble_median_cv_rmse']:.1%}")
    print(f"features: history {out['window_spec']['history_features']}; future {out['window_spec']['future_features']}; "
          f"dropped {out['window_spec']['dropped_features']}")
    print(f"timings: {out['timings_s']}, peak RSS {out['peak_rss_mb']:.0f} MB, {out['epochs_run']} epochs on {out['n_train_windows']:,} windows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=0, help="First N buildings by id (0: all 41)")
    parser.add_argument("--cold-start", type=int, default=5, help="Buildings held out of training for the cold start")
    parser.add_argument("--train-start", default="2016-01-01")
    parser.add_argument("--train-end", default="2019-01-01")
    parser.add_argument("--test-end", default="2020-01-01")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stride-h", type=int, default=24, help="Training origins every this many hours")
    parser.add_argument("--windows-per-epoch", type=int, default=0,
                        help="Train through ml/training_stream.py from a Delta table, at most this many windows an epoch (0: in memory)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["WATTFLOW_HOME"] = tempfile.mkdtemp(prefix="wattflow-bench-real-")
    started = time.perf_counter()
    out = run(args)
    out["total_s"] = round(time.perf_counter() - started, 1)
    print_table(out)
    print(f"total {out['total_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
