"""Land a simulated portfolio like any source would: registry, readings by delivery batch, weather."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.bronze import LandingResult, land_readings, land_weather
from lakehouse.engine import TableEngine, WriteResult
from lakehouse.schemas import BUILDINGS
from lakehouse.simulator.portfolio import SimulatedPortfolio

from wattflow.log import get_logger

log = get_logger(__name__)

SOURCE = "simulator"


@dataclass
class PortfolioLanding:
    buildings: WriteResult
    readings: list[tuple[str, LandingResult]] = field(default_factory=list)  # (batch_id, result) per delivery
    weather: LandingResult | None = None

    @property
    def readings_landed(self) -> int:
        return sum(r.landed for _, r in self.readings)

    @property
    def readings_quarantined(self) -> int:
        return sum(r.quarantined for _, r in self.readings)


def batch_prefix(portfolio: SimulatedPortfolio) -> str:
    """Batch ids follow from what was simulated, so re-landing the same run is recognisable."""
    return f"sim-s{portfolio.seed}-{portfolio.start:%Y%m%dT%H%M}-{portfolio.end:%Y%m%dT%H%M}"


def land_portfolio(
    portfolio: SimulatedPortfolio,
    engine: TableEngine,
    *,
    source: str = SOURCE,
    now: datetime | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PortfolioLanding:
    """Write the registry to `reference.buildings`, then readings (on-time batch first, late ones after)
    and weather through the bronze landing functions. Re-running it changes nothing."""
    step = on_step or (lambda _: None)
    prefix = batch_prefix(portfolio)
    result = PortfolioLanding(buildings=engine.upsert(BUILDINGS, portfolio.registry.to_arrow()))
    step("reference.buildings")
    for delivery, batch in portfolio.deliveries():
        batch_id = f"{prefix}-d{delivery}"
        landed = land_readings(batch, source=source, registry=portfolio.registry, engine=engine, batch_id=batch_id, now=now)
        result.readings.append((batch_id, landed))
        step(f"bronze.sensor_readings delivery {delivery}")
    result.weather = land_weather(portfolio.weather, source=source, engine=engine, batch_id=f"{prefix}-weather", now=now)
    step("bronze.weather")
    return result


# -- a whole portfolio, a chunk of buildings at a time, on the settings' runner ----------------------------


@dataclass
class SimulatedLanding:
    """What `land_simulated` wrote: readings landed and quarantined (over every delivery), the
    quarantine's reasons, and the per-table write results (the last version and summed counts)."""

    readings_landed: int
    readings_quarantined: int
    reasons: dict[str, int]
    written: dict[str, WriteResult]


def landing_chunk(n_buildings: int, ids: list[str], start: datetime, end: datetime, *, seed: int, interval_minutes: int,
                  faults, forecast_issue_hour_utc: int, source: str, now: datetime) -> dict[str, list[tuple[int, pa.Table]]]:
    """One chunk of buildings simulated and made ready to land, as `land_portfolio` lands it: per output
    ("readings", "quarantine", "weather", "weather_quarantine"), (delivery, rows) with bookkeeping, keys unique.
    The Spark path runs this on the executors; a chunk's buildings are every key's buildings, so deduping
    per chunk is deduping the batch."""
    from lakehouse.bronze import _bookkeeping, validate_readings, validate_weather
    from lakehouse.engine import conform, dedupe_last
    from lakehouse.schemas import QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER
    from lakehouse.simulator.portfolio import simulate_portfolio

    portfolio = simulate_portfolio(n_buildings, start, end, seed=seed, interval_minutes=interval_minutes, faults=faults,
                                   forecast_issue_hour_utc=forecast_issue_hour_utc, building_ids=ids)
    prefix = batch_prefix(portfolio)
    out: dict[str, list[tuple[int, pa.Table]]] = {"readings": [], "quarantine": [], "weather": [], "weather_quarantine": [],
                                                  "reasons": []}
    # The counts `land_readings` reports: rows validated, before the upsert folds repeated readings.

    def add(name: str, contract, delivery: int, table: pa.Table, batch_id: str) -> None:
        if table.num_rows:
            out[name].append((delivery, dedupe_last(contract, conform(contract, _bookkeeping(table, source, batch_id, now)))))

    for delivery, batch in portfolio.deliveries():
        validated = validate_readings(batch, portfolio.registry, source=source)
        add("readings", SENSOR_READINGS, delivery, validated.good, f"{prefix}-d{delivery}")
        add("quarantine", QUARANTINE_READINGS, delivery, validated.rejected, f"{prefix}-d{delivery}")
        counts = {**{f"reason:{k}": v for k, v in validated.reasons.items()},
                  "landed": validated.good.num_rows, "quarantined": validated.rejected.num_rows}
        out["reasons"].append((delivery, pa.table({"check": list(counts), "n": list(counts.values())},
                                                  schema=REASONS_SCHEMA.remove(0))))
    validated = validate_weather(portfolio.weather, source=source)
    add("weather", WEATHER, 0, validated.good, f"{prefix}-weather")
    add("weather_quarantine", QUARANTINE_WEATHER, 0, validated.rejected, f"{prefix}-weather")
    return out


# Per chunk and delivery: readings landed and quarantined, and the quarantine's reasons ("reason:<check>").
REASONS_SCHEMA = pa.schema([("delivery", pa.int64()), ("check", pa.string()), ("n", pa.int64())])


def land_simulated(engine: TableEngine, settings, n_buildings: int, start: datetime, end: datetime, *, faults=None,
                   source: str = SOURCE, now: datetime | None = None, chunk_buildings: int | None = None) -> SimulatedLanding:
    """Simulate an `n_buildings` portfolio over [start, end) and land it (registry, readings by delivery,
    weather) a chunk of `compute.chunk_buildings` buildings at a time, on the runner `compute.runner` names:

    - local: each chunk simulated in this process and landed by `land_portfolio` (memory: one chunk);
    - spark: the chunks simulated on the executors (`mapInArrow` over chunk numbers, `landing_chunk`), the
      rows MERGEd (or, for a new table, written) by delta-spark from there: one write per table and
      delivery; the driver sees counts only.

    Both land the same rows (same chunks, same bookkeeping; tested), and a re-run changes nothing.
    """
    from lakehouse.runners import chunk_members, chunk_of
    from lakehouse.simulator.portfolio import build_registry, simulate_portfolio

    now = now or datetime.now(timezone.utc)
    chunk_buildings = chunk_buildings or settings.compute.chunk_buildings
    registry = build_registry(n_buildings, settings.simulator.seed)
    members = chunk_members(chunk_of(registry.building_ids(), chunk_buildings))
    interval = settings.simulator.interval_minutes
    issue_hour = settings.simulator.weather_forecast_issue_hour_utc
    if getattr(engine, "name", "") != "spark":
        landed = quarantined = 0
        reasons: dict[str, int] = {}
        written: dict[str, WriteResult] = {}
        for ids in members.values():
            portfolio = simulate_portfolio(n_buildings, start, end, seed=settings.simulator.seed, interval_minutes=interval,
                                           faults=faults, forecast_issue_hour_utc=issue_hour, building_ids=ids)
            result = land_portfolio(portfolio, engine, source=source, now=now)
            landed, quarantined = landed + result.readings_landed, quarantined + result.readings_quarantined
            for _, r in result.readings:
                for k, v in r.reasons.items():
                    reasons[k] = reasons.get(k, 0) + v
            for wr in [result.buildings, *(w for _, r in result.readings for w in (r.readings, r.quarantine)),
                       *((result.weather.readings, result.weather.quarantine) if result.weather else ())]:
                if wr is not None:
                    written[wr.table] = _add_write(written.get(wr.table), wr)
            del portfolio
        return SimulatedLanding(landed, quarantined, reasons, written)
    return _land_simulated_spark(engine, settings, n_buildings, members, start, end, faults=faults, source=source, now=now,
                                 interval=interval, issue_hour=issue_hour, registry=registry)


def _add_write(before: WriteResult | None, after: WriteResult) -> WriteResult:
    if before is None:
        return after
    return WriteResult(after.table, after.version, before.rows_inserted + after.rows_inserted,
                       before.rows_updated + after.rows_updated, before.rows_unchanged + after.rows_unchanged,
                       before.conflicts_retried + after.conflicts_retried)


def _land_simulated_spark(engine, settings, n_buildings: int, members: dict[int, list[str]], start, end, *, faults, source,
                          now, interval, issue_hour, registry) -> SimulatedLanding:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from lakehouse.runners import Envelope
    from lakehouse.schemas import QUARANTINE_READINGS, QUARANTINE_WEATHER, SENSOR_READINGS, WEATHER

    contracts = {"readings": SENSOR_READINGS, "quarantine": QUARANTINE_READINGS, "weather": WEATHER,
                 "weather_quarantine": QUARANTINE_WEATHER}
    envelope = Envelope({**{n: c.schema for n, c in contracts.items()}, "reasons": REASONS_SCHEMA})
    seed, batch_rows = settings.simulator.seed, settings.lakehouse.spark_arrow_batch_rows
    spark = engine.spark
    written = {BUILDINGS.qualified_name: engine.upsert(BUILDINGS, registry.to_arrow())}
    # Chunks sharing a site simulate its weather alike; the first chunk with a building there lands it, so
    # the weather needs no de-duplicating shuffle (which scattered a few hundred thousand rows over every
    # partition and wrote one small file per partition and date).
    owner: dict[str, int] = {}
    for chunk, ids in sorted(members.items()):
        for b in ids:
            owner.setdefault(registry.get(b).site_id, chunk)

    def core(batches):
        from lakehouse.runners import _on_executor

        _on_executor()
        for batch in batches:
            for chunk in batch.column(0).to_pylist():
                parts = landing_chunk(n_buildings, members[chunk], start, end, seed=seed, interval_minutes=interval,
                                      faults=faults, forecast_issue_hour_utc=issue_hour, source=source, now=now)
                for name, per_delivery in parts.items():
                    for delivery, rows in per_delivery:
                        if name.startswith("weather"):
                            mine = [site for site, c in owner.items() if c == chunk]
                            rows = rows.filter(pc.is_in(rows.column("site_id"), pa.array(mine, pa.string())))
                        rows = rows.append_column("delivery", pa.array(np.full(rows.num_rows, delivery, dtype=np.int64))) \
                            if "delivery" not in rows.column_names else rows
                        packed = envelope.pack(chunk, {name: rows})
                        yield from packed.to_batches(max_chunksize=batch_rows)

    # Waves of a few chunks, one chunk per task: each wave is one mapInArrow job (kept for its counts and
    # MERGEs) and one MERGE per table and delivery, so an executor holds one chunk and a wave's memory does
    # not grow with the portfolio. Each MERGE names the wave's building id range literally: chunks hold
    # sorted, narrow id ranges, so Delta's file statistics skip every other wave's files and wave k's MERGE
    # does not read what waves 0..k-1 wrote.
    wave_size = settings.lakehouse.spark_landing_wave_chunks or spark.sparkContext.defaultParallelism
    order = sorted(members)
    totals: dict[str, int] = {}
    for w in range(0, len(order), max(1, wave_size)):
        wave_started = time.perf_counter()
        wave = order[w:w + wave_size]
        assert wave == list(range(wave[0], wave[-1] + 1)), wave
        ids = [b for c in wave for b in members[c]]
        bounds = {"building_id": (min(ids), max(ids))}
        # Chunk numbers are consecutive: spark.range puts one in each of len(wave) partitions (tasks).
        plan = spark.range(wave[0], wave[-1] + 1, 1, len(wave)).withColumnRenamed("id", "chunk")
        out = plan.mapInArrow(core, schema=envelope.spark_schema()).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            # One pass over the persisted rows: rows per table and delivery, and the summed landing counts.
            # Also each table's dates, which the MERGE names literally (no job of its own to find them).
            counts = out.groupBy("table", "delivery", "check", "date").agg(F.count(F.lit(1)).alias("rows"),
                                                                           F.sum("n").alias("n")).collect()
            rows: dict[tuple[str, int], int] = {}
            dates: dict[tuple[str, int], set] = {}
            for r in counts:
                if r["table"] == "reasons":
                    totals[r["check"]] = totals.get(r["check"], 0) + int(r["n"])
                else:
                    key = (r["table"], int(r["delivery"]))
                    rows[key] = rows.get(key, 0) + int(r["rows"])
                    dates.setdefault(key, set()).add(r["date"])
            for name, contract in contracts.items():
                for delivery in sorted(d for (t, d) in rows if t == name):
                    part = out.where((F.col("table") == name) & (F.col("delivery") == delivery)).select(*contract.schema.names)
                    if name.startswith("weather"):
                        part = part.coalesce(1)  # sites x hours: one writer, one file per date
                    result = engine.upsert_frame(contract, part, rows=rows[(name, delivery)], key_bounds=bounds,
                                                 partition_values={"date": sorted(dates[(name, delivery)])})
                    written[contract.qualified_name] = _add_write(written.get(contract.qualified_name), result)
        finally:
            out.unpersist()
        log.info("landing.wave", chunks=f"{wave[0]}..{wave[-1]}", buildings=f"{bounds['building_id'][0]}..{bounds['building_id'][1]}",
                 seconds=round(time.perf_counter() - wave_started, 1))
    return SimulatedLanding(readings_landed=totals.get("landed", 0), readings_quarantined=totals.get("quarantined", 0),
                            reasons={k.removeprefix("reason:"): v for k, v in totals.items() if k.startswith("reason:")},
                            written=written)
