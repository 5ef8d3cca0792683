"""Bronze -> silver -> gold: the functional cores and their thin storage shells.

Cores (`readings_to_hourly`, `hourly_to_features`) take and return frames. Shells (`curate`,
`build_features`) read a margin before `start` so sequence checks, lags and trailing windows see their
context, and write only [start, end): running an interval twice writes nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data_quality.checks import CHECK_NAMES, READING_CHECKS, flag_readings
from data_quality.policy import BatchRejected, QualityResult, policy_for, raise_on_failures
from data_quality.suites import bronze_sensor_suite, bronze_weather_suite, gold_features_suite, silver_hourly_suite
from data_quality.weather_checks import weather_check_frame
from lakehouse.gold import FeatureCatalogue, build_catalogue, fit_scaling, hourly_to_features
from lakehouse.schemas import (
    BUILDING_HOURLY,
    FEATURES,
    QUALITY_RESULTS,
    QUARANTINE_READINGS,
    QUARANTINE_WEATHER,
    SENSOR_READINGS,
    WEATHER,
)
from lakehouse.silver import hourly_from_flagged

HOUR_US = 3_600_000_000
DESCRIPTIONS = {c.name: c.description for c in READING_CHECKS}
__all__ = ["readings_to_hourly", "hourly_to_features", "curate", "build_features", "CurateResult", "FeaturesResult", "BatchRejected"]


def _utc(value: datetime | date | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _us(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)


def _record_id(source: str, raw: str) -> str:
    from lakehouse.bronze import record_id

    return record_id(source, raw)


# -- core ------------------------------------------------------------------------------------------


def sensor_day_summary(flagged: pd.DataFrame, in_window: np.ndarray, start_us: int, end_us: int) -> pd.DataFrame:
    """Per building, sensor and UTC day: readings, expected readings, completeness and one count per check."""
    f = flagged[in_window]
    ts = f["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    day = ts // (24 * HOUR_US)
    codes = f["sensor_code"].to_numpy()
    key, uniques = pd.factorize(pd.Series(codes * 1_000_000 + (day - day.min() if len(day) else day)))
    n = len(uniques)
    first = pd.Series(np.arange(len(f))).groupby(key).first().to_numpy()
    out = pd.DataFrame(
        {
            "building_id": f["building_id"].to_numpy(dtype=object)[first],
            "sensor_id": f["sensor_id"].to_numpy(dtype=object)[first],
            "metric": f["metric"].to_numpy(dtype=object)[first],
            "date": pd.to_datetime(day[first] * 24 * HOUR_US, unit="us").date,
            "n_readings": np.bincount(key, minlength=n),
        }
    )
    usable = ~(f["duplicate_reading"].to_numpy() | f["future_timestamp"].to_numpy() | f["value_present"].to_numpy())
    out["n_usable"] = np.bincount(key, weights=usable, minlength=n).astype(np.int64)
    day_start = day[first] * 24 * HOUR_US
    covered = np.minimum(day_start + 24 * HOUR_US, end_us) - np.maximum(day_start, start_us)
    out["expected_readings"] = np.maximum(covered // f["interval_us"].to_numpy()[first], 1)
    out["completeness"] = np.minimum(out["n_usable"] / out["expected_readings"], 1.0)
    out["n_missing"] = np.maximum(out["expected_readings"] - out["n_usable"], 0).astype(np.int64)
    for name in CHECK_NAMES:
        out[f"n_{name}"] = np.bincount(key, weights=f[name].to_numpy(), minlength=n).astype(np.int64)
    return out


def _quarantine_rows(flagged: pd.DataFrame, rows: np.ndarray, checks: list[str], batch: str, now: pd.Timestamp) -> pd.DataFrame:
    """Rejected readings as received (JSON), each under the first rejecting check it failed."""
    if len(rows) == 0:
        return pd.DataFrame(columns=[*QUARANTINE_READINGS.schema.names, "table"])
    f = flagged.iloc[rows]
    matrix = np.column_stack([f[c].to_numpy() for c in checks])
    first = matrix.argmax(axis=1)
    unit = f["unit"].astype(object).where(f["unit"].notna(), None) if "unit" in f else pd.Series(None, index=f.index, dtype=object)
    raw_frame = pd.DataFrame({
        "building_id": f["building_id"].astype(str).to_numpy(), "metric": f["metric"].astype(str).to_numpy(),
        "sensor_id": f["sensor_id"].astype(str).to_numpy(), "ts": f["ts"].map(pd.Timestamp.isoformat).to_numpy(),
        "unit": unit.to_numpy(), "value": f["value"].to_numpy(),
    })
    raws = raw_frame.to_json(orient="records", lines=True, double_precision=15).splitlines()
    source = f["source"].astype(str).to_numpy() if "source" in f else np.full(len(f), "unknown", dtype=object)
    names = np.array(checks, dtype=object)
    reasons = []
    for row, v, u, t in zip(matrix, raw_frame["value"].to_numpy(), raw_frame["unit"].to_numpy(), raw_frame["ts"].to_numpy()):
        failed = names[row]
        extra = f" (also: {', '.join(failed[1:])})" if len(failed) > 1 else ""
        reasons.append(f"{failed[0]}: expected {DESCRIPTIONS[failed[0]]}; got value {v!r} {u or ''} at {t}{extra}")
    ingested = f["ingested_at"] if "ingested_at" in f else pd.Series(now, index=f.index)
    return pd.DataFrame(
        {
            "record_id": [_record_id(str(src), raw) for src, raw in zip(source, raws)],
            "source": source,
            "raw": raws,
            "building_id": raw_frame["building_id"].to_numpy(),
            "sensor_id": raw_frame["sensor_id"].to_numpy(),
            "metric": raw_frame["metric"].to_numpy(),
            "ts": f["ts"].to_numpy(),
            "check_name": names[first],
            "reason": reasons,
            "batch_id": batch,
            "ingested_at": pd.to_datetime(ingested, utc=True).fillna(now).to_numpy(),
            "table": QUARANTINE_READINGS.qualified_name,
        }
    )


def _weather_quarantine(frame: pd.DataFrame, flags: dict[str, np.ndarray], names: list[str], rows: np.ndarray, batch: str, now) -> pd.DataFrame:
    if len(rows) == 0:
        return pd.DataFrame()
    f = frame.iloc[rows]
    out = []
    variables = ["temperature_c", "relative_humidity_pct", "dew_point_c", "wind_speed_ms", "cloud_cover_pct", "solar_radiation_wm2"]
    for i, r in zip(rows, f.itertuples(index=False)):
        failed = [n for n in names if flags[n][i]]
        raw = json.dumps({"site_id": r.site_id, "kind": r.kind, "issued_at": pd.Timestamp(r.issued_at).isoformat(),
                          "ts": pd.Timestamp(r.ts).isoformat(),
                          **{v: (None if pd.isna(getattr(r, v, np.nan)) else float(getattr(r, v))) for v in variables}}, sort_keys=True)
        source = str(getattr(r, "source", "unknown"))
        out.append({
            "record_id": _record_id(source, raw), "source": source, "raw": raw, "site_id": r.site_id, "kind": r.kind,
            "issued_at": r.issued_at, "ts": r.ts, "check_name": failed[0],
            "reason": f"{failed[0]} failed" + (f" (also: {', '.join(failed[1:])})" if len(failed) > 1 else ""),
            "batch_id": batch, "ingested_at": getattr(r, "ingested_at", now) if not pd.isna(getattr(r, "ingested_at", pd.NaT)) else now,
            "table": QUARANTINE_WEATHER.qualified_name,
        })
    return pd.DataFrame(out)


def _results_without_ge(spec, counts: dict[str, tuple[int, int]], batch: str, quality) -> list[QualityResult]:
    """Results from our own counts when GE is switched off (unit tests of the cores)."""
    out = []
    for e in spec.expectations:
        if e.name in counts:
            bad, total = counts[e.name]
            out.append(QualityResult(spec.name, batch, e.name, bad == 0, str(bad), e.threshold, bad, total, policy_for(e.name, quality)))
    return out


def check_weather(weather: pd.DataFrame | None, settings, *, start_us: int, end_us: int, batch: str, validate: bool,
                  now: pd.Timestamp) -> tuple[list[QualityResult], pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Weather rows (observations and forecasts, per site) checked row by row: (results, rejects in
    [start, end), good observations, good forecasts).

    Weather belongs to sites, not buildings, and is small (sites x hours), so both runners check it once
    per batch on the driver and hand each chunk of buildings the good rows of its sites.
    """
    quality = settings.quality
    if weather is None or not len(weather):
        return [], pd.DataFrame(), None, None
    wf, wflags = weather_check_frame(weather, quality)
    w_names = list(wflags)
    w_spec = bronze_weather_suite(quality)
    if validate:
        from data_quality.checkpoint import run_suite

        results = run_suite(w_spec, wf, batch, settings)
    else:
        results = _results_without_ge(w_spec, {n: (int(wflags[n].sum()), len(wf)) for n in w_names}, batch, quality)
    w_reject = np.zeros(len(wf), dtype=bool)
    for n in w_names:
        if policy_for(n, quality) in ("reject", "fail"):
            w_reject |= wflags[n]
    w_ts = wf["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    w_window = (w_ts >= start_us) & (w_ts < end_us)
    rejects = _weather_quarantine(wf, wflags, w_names, np.flatnonzero(w_reject & w_window), batch, now)
    good = wf[~w_reject]
    return results, rejects, good[good["kind"] == "observation"], good[good["kind"] == "forecast"]


def batch_window(flagged: pd.DataFrame, start, end, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a batch; without an explicit interval, the span of its readings - but not a
    reading stamped in the future."""
    plausible = flagged["ts"][~flagged["future_timestamp"]]
    start_ts = _utc(start) if start is not None else (plausible.min().floor("h") if len(plausible) else now.floor("h"))
    end_ts = _utc(end) if end is not None else (plausible.max().floor("h") + pd.Timedelta(hours=1) if len(plausible) else start_ts)
    return start_ts, end_ts


def readings_chunk(
    df: pd.DataFrame,
    registry,
    settings,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    batch: str,
    building_ids: list[str],
    observations: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
    validate: bool = True,
    now: pd.Timestamp | None = None,
    flagged: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[QualityResult]]:
    """The per-building core of curation: one building's (or a chunk of buildings') readings, checked,
    quarantined by policy and aggregated to silver hours in [start, end), with every expectation's result
    on this chunk. Pure: frames, registry and settings in; (silver, quarantined readings, results) out.
    Never raises on a failed expectation: the caller decides over the whole batch (`merge_results`).

    Both runners call exactly this: the local one per chunk in this process, the Spark one per chunk in
    `applyInPandas` on an executor.
    """
    quality = settings.quality
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    if flagged is None:
        flagged = flag_readings(df, registry, quality).frame
    start_us, end_us = _us(start), _us(end)
    ts_us = flagged["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    in_window = (ts_us >= start_us) & (ts_us < end_us)
    # A future-stamped reading is judged where it was received, whatever its stamp says.
    in_window |= flagged["future_timestamp"].to_numpy() & (ts_us >= start_us)

    reject_checks = [c for c in CHECK_NAMES if policy_for(c, quality) in ("reject", "fail")]
    rejected = np.zeros(len(flagged), dtype=bool)
    for c in reject_checks:
        rejected |= flagged[c].to_numpy()

    results: list[QualityResult] = []
    sensor_spec = bronze_sensor_suite(quality)
    summary = sensor_day_summary(flagged, in_window, start_us, end_us)
    if validate and len(summary):
        from data_quality.checkpoint import run_suite

        results += run_suite(sensor_spec, summary, batch, settings)
    else:
        counts = {c: (int(flagged[c].to_numpy()[in_window].sum()), int(in_window.sum())) for c in CHECK_NAMES}
        results += _results_without_ge(sensor_spec, counts, batch, quality)
    n_window = int(in_window.sum())
    n_rejected = int((rejected & in_window).sum())
    share = n_rejected / n_window if n_window else 0.0
    systematic = np.zeros(len(flagged), dtype=bool)
    for c in quality.systematic_checks:
        if c in flagged:
            systematic |= flagged[c].to_numpy()
    # Judged per sensor: one meter in the wrong unit is a small share of a portfolio's batch.
    n_systematic = int((systematic & in_window).sum())
    systematic_share, worst = 0.0, ""
    if n_systematic:
        per_sensor = pd.DataFrame({"b": flagged["building_id"], "s": flagged["sensor_id"], "bad": systematic})[in_window]
        shares = per_sensor.groupby(["b", "s"], observed=True)["bad"].mean()
        systematic_share, worst = float(shares.max()), "{}/{}: ".format(*shares.idxmax())
    results += [
        QualityResult(sensor_spec.name, batch, "reject_share", share <= quality.max_reject_share, f"{share:.6f}",
                      f"<= {quality.max_reject_share}", n_rejected, n_window, policy_for("reject_share", quality)),
        QualityResult(sensor_spec.name, batch, "systematic_reject_share", systematic_share <= quality.max_systematic_share,
                      f"{worst}{systematic_share:.6f}", f"<= {quality.max_systematic_share} of a sensor's readings "
                      f"({', '.join(quality.systematic_checks)})",
                      n_systematic, n_window, policy_for("systematic_reject_share", quality)),
    ]
    hourly = hourly_from_flagged(
        flagged, rejected, registry, settings, building_ids=building_ids, start_us=start_us, end_us=end_us,
        observations=observations, forecasts=forecasts,
    )
    silver_spec = silver_hourly_suite(quality)
    if validate and len(hourly):
        from data_quality.checkpoint import run_suite

        frame = hourly.assign(minute_of_ts=hourly["ts"].dt.minute)
        results += run_suite(silver_spec, frame, batch, settings)
    rejects = _quarantine_rows(flagged, np.flatnonzero(rejected & in_window), reject_checks, batch, now)
    hourly = hourly[[c for c in BUILDING_HOURLY.schema.names]]
    return hourly, rejects, results


def stop_on_failures(results: list[QualityResult], batch: str) -> None:
    """BatchRejected for the first `fail`-policy expectation that did not hold, reading checks first:
    a batch whose readings fail is rejected before its silver is judged (those results are left out)."""
    failed = [r for r in results if not r.success and r.policy == "fail"]
    if not failed:
        return
    early = [r for r in failed if r.suite != "silver_building_hourly"]
    first = (early or failed)[0]
    kept = [r for r in results if r.suite != "silver_building_hourly"] if early else results
    raise BatchRejected(first.suite, batch, first.expectation, first.observed_value, first.threshold, kept)


def readings_to_hourly(
    df: pd.DataFrame,
    registry,
    settings,
    *,
    weather: pd.DataFrame | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    batch: str = "adhoc",
    validate: bool = True,
    building_ids: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[QualityResult]]:
    """Check readings and weather, apply the policies, and aggregate to silver hours in [start, end).

    Readings before `start` are context for the sequence checks only. Returns the silver rows, the rows
    to quarantine (readings and weather; column `table` says which), and every expectation's result.
    Raises `BatchRejected` when an expectation with policy `fail` does not hold.
    One chunk of the runners (`readings_chunk` after `check_weather`), for callers holding all the frames.
    """
    now = pd.Timestamp.now(tz="UTC")
    flagged = flag_readings(df, registry, settings.quality).frame
    start_ts, end_ts = batch_window(flagged, start, end, now)
    w_results, weather_rejects, observations, forecasts = check_weather(
        weather, settings, start_us=_us(start_ts), end_us=_us(end_ts), batch=batch, validate=validate, now=now)
    ids = building_ids or sorted(flagged["building_id"].unique().tolist())
    hourly, rejects, results = readings_chunk(
        df, registry, settings, start=start_ts, end=end_ts, batch=batch, building_ids=ids, observations=observations,
        forecasts=forecasts, validate=validate, now=now, flagged=flagged)
    # Results in the order the suites run: readings, weather, silver.
    silver = [r for r in results if r.suite == "silver_building_hourly"]
    results = [r for r in results if r.suite != "silver_building_hourly"] + w_results + silver
    stop_on_failures(results, batch)
    raise_on_failures(results)
    if len(weather_rejects):
        rejects = pd.concat([rejects, weather_rejects], ignore_index=True)
    return hourly, rejects, results


# -- shell -----------------------------------------------------------------------------------------


@dataclass
class CurateResult:
    start: datetime
    end: datetime
    batch: str
    readings: int
    hours: int
    rejected: int
    silver_version: int | None
    silver_changed: bool
    results: list[QualityResult] = field(default_factory=list)
    data_docs: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FeaturesResult:
    start: datetime
    end: datetime
    rows: int
    gold_version: int | None
    gold_changed: bool
    catalogue_path: str
    results: list[QualityResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _date_filters(start: pd.Timestamp, end: pd.Timestamp) -> list:
    return [("date", ">=", start.date()), ("date", "<=", end.date())]


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(strings_to_categorical=False, self_destruct=True)


def _write_results(engine, results: list[QualityResult], run_id: str) -> None:
    if not results:
        return
    now = pd.Timestamp.now(tz="UTC")
    rows = [{**r.as_row(), "run_id": run_id, "validated_at": now} for r in results]
    engine.upsert(QUALITY_RESULTS, pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))


def _batch_name(kind: str, start: pd.Timestamp, end: pd.Timestamp, building_ids: list[str] | None) -> str:
    scope = ",".join(sorted(building_ids)) if building_ids else "all"
    return f"{kind}:{start:%Y-%m-%dT%H}..{end:%Y-%m-%dT%H}:{scope}"


def curate(engine, registry, start, end, settings, *, building_ids: list[str] | None = None, validate: bool = True,
           data_docs: bool = True) -> CurateResult:
    """Bronze readings and weather in [start, end) -> checked silver `building_hourly` + quarantine.

    Reads `settings.quality.curate_margin_h` before `start` (context for sequence checks and gap filling)
    and one hour after `end` (a register's last interval ends there); writes only hours in [start, end).
    The readings go through `readings_chunk` one chunk of buildings at a time, on the runner
    `settings.compute.runner` names (lakehouse/runners.py); weather is checked once, here.
    Every expectation result lands in `monitoring.quality_results`, also when the batch is rejected.
    """
    import time
    import uuid

    from lakehouse.runners import chunk_of, get_runner, merge_results

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    now = pd.Timestamp.now(tz="UTC")
    start_ts, end_ts = _utc(start), _utc(end)
    read_from = start_ts - pd.Timedelta(hours=settings.quality.curate_margin_h)
    read_to = end_ts + pd.Timedelta(hours=1)
    weather = _to_pandas(engine.read(WEATHER, filters=_date_filters(read_from, read_to)))
    if building_ids:
        sites = {registry.get(b).site_id for b in building_ids}
        weather = weather[weather["site_id"].isin(sites)]
    batch = _batch_name("curate", start_ts, end_ts, building_ids)
    ids = sorted(building_ids) if building_ids else registry.building_ids()
    w_results, weather_rejects, observations, forecasts = check_weather(
        weather, settings, start_us=_us(start_ts), end_us=_us(end_ts), batch=batch, validate=validate, now=now)
    timings["weather"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    runner = get_runner(engine, settings)
    outcome = runner.curate(registry, chunk_of(ids, settings.compute.chunk_buildings), read_from=read_from,
                            read_to=read_to, start=start_ts, end=end_ts, batch=batch, observations=observations,
                            forecasts=forecasts, validate=validate, now=now)
    merged = merge_results(outcome.results, settings)
    silver_results = [r for r in merged if r.suite == "silver_building_hourly"]
    results = [r for r in merged if r.suite != "silver_building_hourly"] + w_results + silver_results
    timings["checks_and_silver"] = time.perf_counter() - t1
    try:
        stop_on_failures(results, batch)
    except BatchRejected as err:
        outcome.discard()
        _write_results(engine, err.results, uuid.uuid4().hex)
        if data_docs and validate:
            from data_quality.checkpoint import build_data_docs

            build_data_docs(settings)
        raise

    t2 = time.perf_counter()
    written = outcome.write()
    if len(weather_rejects):
        engine.upsert(QUARANTINE_WEATHER, pa.Table.from_pandas(weather_rejects[list(QUARANTINE_WEATHER.schema.names)],
                                                               preserve_index=False))
    _write_results(engine, results, uuid.uuid4().hex)
    timings["write"] = time.perf_counter() - t2
    docs = None
    if data_docs and validate:
        from data_quality.checkpoint import build_data_docs

        t3 = time.perf_counter()
        docs = str(build_data_docs(settings))
        timings["data_docs"] = time.perf_counter() - t3
    silver = written.get("silver")
    return CurateResult(
        start=start_ts.to_pydatetime(), end=end_ts.to_pydatetime(), batch=batch, readings=outcome.inputs,
        hours=outcome.rows.get("silver", 0), rejected=outcome.rows.get("quarantine", 0),
        silver_version=silver.version if silver else engine.version(BUILDING_HOURLY),
        silver_changed=bool(silver and silver.changed), results=results, data_docs=docs, timings=timings,
    )


def catalogue_uri(engine) -> str:
    return f"{engine.root_uri}/gold/features_catalogue.json" if hasattr(engine, "root_uri") else "gold/features_catalogue.json"


def read_catalogue(engine) -> FeatureCatalogue | None:
    """The feature catalogue (columns, scaling) gold was last built with, or None before the first build."""
    stored = _read_text(catalogue_uri(engine))
    return FeatureCatalogue.from_json(stored) if stored else None


def _read_text(uri: str) -> str | None:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")
    try:
        with filesystem.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _write_text(uri: str, text: str) -> None:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as f:
        f.write(text.encode())


def build_features(engine, registry, start, end, settings, *, validate: bool = True, refit_scaling: bool = False) -> FeaturesResult:
    """Silver hours in [start, end) -> gold `features`, plus the feature catalogue beside the table.

    Reads `settings.features.margin_h` of silver before `start` for lags and trailing windows. Scaling
    parameters come from the stored catalogue (buildings new to it are fitted and added), so a re-run of
    an interval reproduces its rows exactly. Runs `runners.features_chunk` per chunk of buildings on the
    runner `settings.compute.runner` names.
    """
    import time
    import uuid

    from lakehouse.runners import chunk_of, get_runner, merge_results, scaling_from_table

    t0 = time.perf_counter()
    start_ts, end_ts = _utc(start), _utc(end)
    read_from = start_ts - pd.Timedelta(hours=settings.features.margin_h)
    uri = catalogue_uri(engine)
    stored = None if refit_scaling else _read_text(uri)
    catalogue = FeatureCatalogue.from_json(stored) if stored else None
    scaling = catalogue.scaling if catalogue else {}
    batch = _batch_name("features", start_ts, end_ts, None)
    runner = get_runner(engine, settings)
    outcome = runner.features(registry, chunk_of(registry.building_ids(), settings.compute.chunk_buildings),
                              read_from=read_from, start=start_ts, end=end_ts, batch=batch, scaling=scaling,
                              validate=validate)
    for k, per_building in scaling_from_table(outcome.summaries["scaling"]).items():
        scaling.setdefault(k, {}).update(per_building)
    results = merge_results(outcome.results, settings)
    timings = {"features": time.perf_counter() - t0}
    if results:
        _write_results(engine, results, uuid.uuid4().hex)
    try:
        raise_on_failures(results)
    except BatchRejected:
        outcome.discard()
        raise

    t3 = time.perf_counter()
    written = outcome.write()
    new_catalogue = build_catalogue(settings, scaling)
    if stored != new_catalogue.to_json():
        _write_text(uri, new_catalogue.to_json())
    timings["write"] = time.perf_counter() - t3
    gold = written.get("features")
    return FeaturesResult(start=start_ts.to_pydatetime(), end=end_ts.to_pydatetime(), rows=outcome.rows.get("features", 0),
                          gold_version=gold.version if gold else engine.version(FEATURES),
                          gold_changed=bool(gold and gold.changed), catalogue_path=uri, results=results, timings=timings)
