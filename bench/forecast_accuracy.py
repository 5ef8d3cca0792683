"""Day-ahead accuracy of the LSTM beside both baselines, on a simulated portfolio and on the UCI appliances house.

Simulated: `simulate_portfolio` (faults included) -> silver (`readings_to_hourly`) -> gold
(`hourly_to_features`), in memory; train before the last `--backtest-days`, backtest each local midnight
after. UCI appliances (Wh per 10 min, Belgium, 2016): the file source's mapping -> silver -> gold, hourly;
train on the first 80 % by time, backtest the rest (energy_valid: every hour with measured energy, see
`uci_gold`). The UCI data has no weather forecast: the forecast
columns are filled with the observation of the same hour the day before (known at the origin), never the
observation itself.

    python bench/forecast_accuracy.py [--buildings 3] [--days 240] [--epochs 30] [--trials N] [--skip-uci] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The real UCI appliances data ships with the repository (data/uci-appliances, its README says where from).
UCI_ZIP = REPO / "data" / "uci-appliances" / "energydata_complete.zip"


def simulated_gold(n_buildings: int, days: int, settings) -> tuple[pd.DataFrame, dict[str, str]]:
    from lakehouse.curation import readings_to_hourly
    from lakehouse.gold import hourly_to_features
    from lakehouse.simulator import simulate_portfolio

    start = pd.Timestamp("2024-01-01")
    end = start + pd.Timedelta(days=days)
    portfolio = simulate_portfolio(n_buildings, start.date(), end.date(), seed=42)
    readings = portfolio.readings.to_pandas()
    readings["ingested_at"] = pd.Timestamp(end, tz="UTC")
    weather = portfolio.weather.to_pandas().assign(ingested_at=pd.Timestamp(end, tz="UTC"))
    hourly, _, _ = readings_to_hourly(readings.drop(columns=[c for c in ("delivery",) if c in readings]),
                                      portfolio.registry, settings, weather=weather, start=start, end=end, validate=False)
    gold = hourly_to_features(hourly, portfolio.registry, settings)
    return gold, {b.building_id: b.timezone for b in portfolio.registry}


def uci_gold(settings) -> tuple[pd.DataFrame, dict[str, str]]:
    from lakehouse.buildings import Building, BuildingRegistry, Sensor
    from lakehouse.curation import readings_to_hourly
    from lakehouse.gold import hourly_to_features
    from lakehouse.sources.files import FileMapping, file_records, read_table_file

    frame = read_table_file(UCI_ZIP)
    temps, hums = [f"T{i}" for i in range(1, 10)], [f"RH_{i}" for i in range(1, 10)]
    mapping = FileMapping(
        building_id="uci-house", timestamp_column="date", energy_column="Appliances", energy_unit="Wh",
        sensor_columns=tuple([("indoor_temperature", c) for c in temps] + [("indoor_humidity", c) for c in hums]),
        weather_columns={"temperature_c": "T_out", "relative_humidity_pct": "RH_out", "wind_speed_ms": "Windspeed",
                         "dew_point_c": "Tdewpoint"},
        timezone="Europe/Brussels", site_id="uci-stambruges", clock="standard",
    )
    records = file_records(frame, mapping, "Europe/Brussels", "uci-stambruges")
    sensors = [Sensor(sensor_id=s, metric=m) for s, m, _ in mapping.sensors()]
    registry = BuildingRegistry(buildings=[Building(
        building_id="uci-house", name="UCI appliances house", site_id="uci-stambruges", timezone="Europe/Brussels",
        country="BE", use_type="residential", floor_area_m2=280, latitude=50.51, longitude=3.73,
        grid_emission_factor_kg_per_kwh=0.167, tariff_per_kwh=0.28, currency="EUR", sensors=sensors)])
    settings.quality.policies["stuck_sensor"] = "warn"  # a quantised logger sits on one value for hours
    readings = records.readings.to_pandas()
    weather = records.weather.to_pandas().assign(issued_at=lambda w: w["ts"])
    hourly, _, _ = readings_to_hourly(readings, registry, settings, weather=weather, batch="uci", validate=False)
    gold = hourly_to_features(hourly, registry, settings).sort_values("ts").reset_index(drop=True)
    # Silver flags ~14 % of this house's hours `outlier`: a single house's appliance meter has genuine
    # 10-minute peaks that trip the spike rule (tuned for building meters). Score every hour with an energy.
    gold["energy_valid"] = gold["energy_kwh"].notna()
    observed = {"forecast_temperature": "temperature", "forecast_humidity": "humidity",
                "forecast_solar_radiation": "solar_radiation"}
    for forecast, obs in observed.items():
        if gold[forecast].isna().all():
            gold[forecast] = gold[obs].shift(24) if gold[obs].notna().any() else 0.0
    for column in ("solar_radiation", "occupancy", "forecast_solar_radiation"):
        if gold[column].isna().all():
            gold[column] = 0.0
    return gold, {"uci-house": "Europe/Brussels"}


from ml.yardstick import gradient_boosting_yardstick  # noqa: E402


def evaluate(name: str, gold: pd.DataFrame, timezones: dict[str, str], train_end: pd.Timestamp, settings, epochs: int,
             trials: int = 0) -> dict:
    from dataclasses import replace

    from ml.backtest import backtest
    from ml.metrics import accuracy
    from ml.model import ModelParams
    from ml.pipeline import spec_from_settings, train_model

    spec = spec_from_settings(settings)
    params = ModelParams.from_settings(settings.model, epochs=epochs)
    t = time.perf_counter()
    tuned = None
    if trials:
        from ml.tuning import tune

        # The study sees only the training period, as `wattflow tune` does; the backtest days stay unseen.
        tuned = tune(gold[pd.to_datetime(gold["ts"], utc=True) < train_end], settings, n_trials=trials, spec=spec,
                     base_params=params, timezones=timezones, study_name=f"accuracy-{name}")
        params, spec = tuned.best_params(params), replace(spec, lookback_h=tuned.best_lookback(spec.lookback_h))
    tune_s = time.perf_counter() - t
    t = time.perf_counter()
    trained = train_model(gold, spec, params, timezones=timezones, train_end=train_end,
                          stride_h=settings.model.train_origin_stride_h, validation_fraction=settings.model.validation_fraction)
    result = backtest(gold, {"model": trained.predictor()}, start=train_end, timezones=timezones, ashrae_p=settings.model.ashrae_p)
    summary = result.summary(name)
    summary["train_s"] = round(time.perf_counter() - t, 1)
    scored = result.hours[result.hours["scored"]]
    yardstick = gradient_boosting_yardstick(gold, train_end, scored)
    summary["yardstick_gradient_boosting"] = accuracy(scored["actual"].to_numpy(), yardstick, p=settings.model.ashrae_p).as_dict()
    summary["epochs_run"] = trained.epochs_run
    summary["train_end"] = train_end.isoformat()
    summary["mae_ratio_vs_persistence"] = summary["model"]["mae"] / summary["baselines"]["persistence_24h"]["mae"]
    summary["tuning_trials"] = trials
    summary["tuning_s"] = round(tune_s, 1)
    if tuned is not None:
        summary["tuned"] = {**tuned.best, "best_val_loss": tuned.best_value}
    return summary


def print_summary(summary: dict) -> None:
    print(f"\n{summary['building_id']}: {summary['n_hours']} h scored, trained to {summary['train_end']} in {summary['train_s']} s"
          f" ({summary['epochs_run']} epochs{', tuned: ' + str(summary['tuned']) if 'tuned' in summary else ''})")
    print(f"{'forecast':<22}{'MAE':>10}{'RMSE':>10}{'CV(RMSE)':>10}{'NMBE':>9}{'MAPE':>9}")
    rows = {"lstm": summary["model"], **summary["baselines"], "gradient boosting": summary["yardstick_gradient_boosting"]}
    for label, m in rows.items():
        print(f"{label:<22}{m['mae']:>10.3f}{m['rmse']:>10.3f}{m['cv_rmse']:>10.1%}{m['nmbe']:>+9.1%}{m['mape']:>9.1%}")
    print(f"MAE / persistence MAE = {summary['mae_ratio_vs_persistence']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=3)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--backtest-days", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--trials", type=int, default=0, help="Optuna trials before the final training (0: settings' parameters)")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--skip-uci", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["WATTFLOW_HOME"] = tempfile.mkdtemp(prefix="wattflow-bench-accuracy-")
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    out: dict[str, dict] = {}
    if not args.skip_simulated:
        gold, tz = simulated_gold(args.buildings, args.days, settings)
        last = pd.to_datetime(gold["ts"], utc=True).max()
        out["simulated"] = evaluate(f"simulated x{args.buildings}", gold, tz, (last - pd.Timedelta(days=args.backtest_days)).floor("D"), settings, args.epochs, args.trials)
        print_summary(out["simulated"])
    if not args.skip_uci:
        gold, tz = uci_gold(settings)
        ts = pd.to_datetime(gold["ts"], utc=True)
        cut = (ts.min() + (ts.max() - ts.min()) * 0.8).floor("D")
        out["uci"] = evaluate("uci-house", gold, tz, cut, settings, args.epochs, args.trials)
        print_summary(out["uci"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
