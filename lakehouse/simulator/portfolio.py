"""A deterministic portfolio of buildings: registry, sensor readings, weather and ground truth.

Every random stream is seeded from (seed, purpose, index), so a building's data does not depend on
how many other buildings are simulated, and turning faults on does not change the clean physics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.buildings import METRIC_UNITS, Building, BuildingRegistry, Sensor
from lakehouse.simulator.config import FaultConfig, HeatWave, OccupancyChange, Retrofit, _utc
from lakehouse.simulator.faults import HOUR_US, Injector, Stream, TruthRecord
from lakehouse.simulator.physics import BuildingTruth, Calendar, local_calendar, simulate_building
from lakehouse.simulator.sites import SITES, USE_TYPE_ORDER, USE_TYPES, Site
from lakehouse.simulator.weather import SiteWeather, day_ahead_forecasts, simulate_site_weather

UTC_US = pa.timestamp("us", tz="UTC")
FORECAST_MAX_LEAD_H = 48  # a day-ahead run issued the morning before must reach the end of any local day
GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("building_id", pa.string()),
        ("sensor_id", pa.string()),
        ("metric", pa.string()),
        ("start", UTC_US),  # inclusive
        ("end", UTC_US),  # exclusive
        ("detail", pa.string()),  # JSON
    ]
)
READINGS_SCHEMA = pa.schema(
    [
        ("building_id", pa.string()),
        ("sensor_id", pa.string()),
        ("metric", pa.string()),
        ("ts", UTC_US),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("delivery", pa.int16()),  # 0 = arrives on time; 1 = in a later batch (a `late` fault)
    ]
)
# Sensor id suffix per metric; every simulated building carries all six.
SENSOR_SUFFIX = {
    "energy": "elec",
    "energy_cumulative": "elec-reg",
    "indoor_temperature": "temp",
    "indoor_humidity": "rh",
    "occupancy": "occ",
    "co2": "co2",
}
RSEED = {"registry": 1, "weather": 2, "forecast": 3, "physics": 4, "faults": 5}


@dataclass
class SimulatedPortfolio:
    registry: BuildingRegistry
    readings: pa.Table  # READINGS_SCHEMA: raw as a source would send them, faults included
    weather: pa.Table  # bronze.weather columns minus bookkeeping
    ground_truth: pa.Table  # GROUND_TRUTH_SCHEMA: one row per injected fault or drift event
    truth_hourly: pa.Table  # clean true energy per building and UTC hour
    start: datetime
    end: datetime
    interval_minutes: int
    seed: int

    @property
    def expected_hourly_kwh(self) -> pa.Table:
        """What each building would use per hour without injected after-hours waste."""
        return self.truth_hourly.select(["building_id", "ts", "baseline_energy_kwh"]).rename_columns(
            ["building_id", "ts", "expected_kwh"]
        )

    def deliveries(self) -> list[tuple[int, pa.Table]]:
        """The readings in the batches a source would deliver them: on time first, late ones after."""
        delivery = self.readings.column("delivery")
        out = []
        for d in sorted(pc.unique(delivery).to_pylist()):
            batch = self.readings.filter(pc.equal(delivery, d)) if d or pc.max(delivery).as_py() else self.readings
            out.append((int(d), batch.drop_columns(["delivery"])))
        return out

    def faults(self, kind: str) -> pa.Table:
        return self.ground_truth.filter(pc.equal(self.ground_truth.column("kind"), kind))


def _as_utc(value: datetime | date | str) -> datetime:
    return _utc(value)


def build_registry(n_buildings: int, seed: int = 42) -> BuildingRegistry:
    """N buildings spread over the catalogue's sites and use types, with six sensors each."""
    buildings = []
    for i in range(n_buildings):
        rng = np.random.default_rng([seed, RSEED["registry"], i])
        site = SITES[i % len(SITES)]
        use = USE_TYPES[USE_TYPE_ORDER[(i + i // len(SITES)) % len(USE_TYPE_ORDER)]]
        lo, hi = use.floor_area_range_m2
        area = float(np.round(np.exp(rng.uniform(np.log(lo), np.log(hi))), -1))
        bid = f"b{i + 1:02d}"
        # Some thermometers read off and carry a calibration offset in the registry.
        temp_offset = float(rng.choice([0.0, 0.0, 0.3, -0.4]))
        sensors = [
            Sensor(sensor_id=f"{bid}-{SENSOR_SUFFIX[m]}", metric=m, unit=METRIC_UNITS[m], offset=temp_offset if m == "indoor_temperature" else 0.0)
            for m in SENSOR_SUFFIX
        ]
        buildings.append(
            Building(
                building_id=bid,
                name=f"{site.city} {use.name} {i // len(SITES) + 1}",
                site_id=site.site_id,
                timezone=site.timezone,
                country=site.country,
                use_type=use.name,
                floor_area_m2=area,
                latitude=round(site.latitude + rng.uniform(-0.05, 0.05), 4),
                longitude=round(site.longitude + rng.uniform(-0.05, 0.05), 4),
                grid_emission_factor_kg_per_kwh=site.grid_emission_factor_kg_per_kwh,
                tariff_per_kwh=site.tariff_per_kwh,
                currency=site.currency,
                sensors=sensors,
            )
        )
    return BuildingRegistry(buildings=buildings)


def _to_us(d: datetime) -> int:
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def simulate_portfolio(
    n_buildings: int,
    start: datetime | date | str,
    end: datetime | date | str,
    *,
    seed: int = 42,
    interval_minutes: int = 15,
    faults: FaultConfig | None = None,
    drift: Sequence[Retrofit | HeatWave | OccupancyChange] | None = None,
    forecast_issue_hour_utc: int | None = None,
    building_ids: Sequence[str] | None = None,
) -> SimulatedPortfolio:
    """Simulate `n_buildings` from `start` (inclusive) to `end` (exclusive), UTC, on an `interval_minutes` grid.

    `building_ids`: simulate only these buildings of the `n_buildings` portfolio, each exactly as in the
    whole portfolio (its physics and registry entry are seeded by its position), so a large portfolio can
    be simulated and landed a chunk of buildings at a time. Faults are drawn over the buildings simulated,
    so a chunk's faults are not the whole portfolio's.
    """
    if n_buildings < 1:
        raise ValueError(f"n_buildings must be at least 1, got {n_buildings}")
    if interval_minutes <= 0 or 60 % interval_minutes:
        raise ValueError(f"interval_minutes must divide an hour, got {interval_minutes}")
    start_dt, end_dt = _as_utc(start), _as_utc(end)
    if end_dt <= start_dt:
        raise ValueError(f"end {end_dt.isoformat()} must be after start {start_dt.isoformat()}")
    if forecast_issue_hour_utc is None:
        from wattflow.settings import get_settings

        forecast_issue_hour_utc = get_settings().simulator.weather_forecast_issue_hour_utc
    drift = list(drift or [])
    registry = build_registry(n_buildings, seed)
    position = {b.building_id: i for i, b in enumerate(registry.buildings)}
    if building_ids is not None:
        unknown = sorted(set(building_ids) - set(position))
        if unknown:
            raise KeyError(f"building_ids {unknown[:5]} are not in a {n_buildings}-building portfolio (b01..)")
        keep = set(building_ids)
        registry = BuildingRegistry(buildings=[b for b in registry.buildings if b.building_id in keep])
    sites = {s.site_id: s for s in SITES}
    _check_drift(drift, registry)

    interval_us = interval_minutes * 60 * 1_000_000
    start_us, end_us = _to_us(start_dt), _to_us(end_dt)
    grid = np.arange(start_us, end_us, interval_us, dtype=np.int64)

    # Weather truth per site, hourly, with margins for the forecasts issued before the start.
    hour_grid = np.arange(start_us // HOUR_US * HOUR_US - 2 * 86_400_000_000, end_us + 3 * 86_400_000_000, HOUR_US, dtype=np.int64)
    weather: dict[str, SiteWeather] = {}
    for k, site_id in enumerate(registry.site_ids()):
        waves = [(_to_us(e.start), _to_us(e.end), e.delta_c) for e in drift if isinstance(e, HeatWave) and e.site_id == site_id]
        site_index = [s.site_id for s in SITES].index(site_id)
        weather[site_id] = simulate_site_weather(
            sites[site_id], hour_grid, np.random.default_rng([seed, RSEED["weather"], site_index]), waves
        )

    calendars = {b.building_id: local_calendar(grid, b.timezone, b.country) for b in registry.buildings}
    faults = faults or FaultConfig.none()
    injector = Injector(grid, interval_us, np.random.default_rng([seed, RSEED["faults"]]), faults)
    streams: dict[tuple[str, str], Stream] = {}
    for b in registry.buildings:
        for s in b.sensors:
            streams[(b.building_id, s.metric)] = Stream(
                b.building_id, s.sensor_id, s.metric, np.empty(0), grid.copy(), np.ones(len(grid), bool), np.zeros(len(grid), np.int16)
            )

    waste = _plan_waste(registry, calendars, grid, faults, injector, streams)

    truths: dict[str, BuildingTruth] = {}
    for b in registry.buildings:
        i = position[b.building_id]
        hvac_factor = np.ones(len(grid))
        occupancy_factor = np.ones(len(grid))
        for e in drift:
            if isinstance(e, Retrofit) and e.building_id == b.building_id:
                hvac_factor = np.where(grid >= _to_us(e.start), hvac_factor * (1 - e.hvac_reduction), hvac_factor)
            if isinstance(e, OccupancyChange) and e.building_id == b.building_id:
                occupancy_factor = np.where(grid >= _to_us(e.start), occupancy_factor * e.factor, occupancy_factor)
        truth = simulate_building(
            use=USE_TYPES[b.use_type],
            floor_area_m2=b.floor_area_m2,
            ts_us=grid,
            interval_minutes=interval_minutes,
            calendar=calendars[b.building_id],
            weather=weather[b.site_id],
            rng=np.random.default_rng([seed, RSEED["physics"], i]),
            hvac_factor=hvac_factor,
            occupancy_factor=occupancy_factor,
            waste_w=waste.get(b.building_id, np.zeros(len(grid))),
        )
        truths[b.building_id] = truth
        register_start = float(np.round(np.random.default_rng([seed, RSEED["registry"], i, 1]).uniform(1e4, 5e5), 2))
        clean = {
            "energy": truth.energy_kwh,
            "energy_cumulative": np.round(register_start + np.cumsum(truth.energy_kwh), 3),
            "indoor_temperature": truth.indoor_temperature_c,
            "indoor_humidity": truth.indoor_humidity_pct,
            "occupancy": truth.occupancy_people,
            "co2": truth.co2_ppm,
        }
        for s in b.sensors:
            # Sources send raw values; the registry's calibration (raw * scale + offset) recovers the truth.
            streams[(b.building_id, s.metric)].value = np.round((clean[s.metric] - s.offset) / s.scale, 3)

    for b in registry.buildings:
        if b.building_id in waste:
            _record_waste(injector, streams[(b.building_id, "energy")], truths[b.building_id], faults)
    _inject(registry, streams, injector, faults)

    readings = _assemble_readings(registry, streams)
    ground_truth = _ground_truth(injector.truth, drift, registry, grid, interval_us)
    return SimulatedPortfolio(
        registry=registry,
        readings=readings,
        weather=_weather_table(registry, weather, sites, start_us, end_us, forecast_issue_hour_utc, seed),
        ground_truth=ground_truth,
        truth_hourly=_truth_hourly(registry, truths, grid),
        start=start_dt,
        end=end_dt,
        interval_minutes=interval_minutes,
        seed=seed,
    )


def _check_drift(drift: list, registry: BuildingRegistry) -> None:
    for e in drift:
        if isinstance(e, (Retrofit, OccupancyChange)):
            registry.get(e.building_id)  # KeyError naming the id
        elif isinstance(e, HeatWave) and e.site_id not in registry.site_ids():
            raise KeyError(f"heat_wave: unknown site_id {e.site_id!r}; simulated sites: {', '.join(registry.site_ids())}")


def _plan_waste(registry, calendars, grid, faults: FaultConfig, injector: Injector, streams) -> dict[str, np.ndarray]:
    """After-hours waste is real consumption, so it is planned before the physics runs."""
    waste: dict[str, np.ndarray] = {}
    if not faults.after_hours_waste:
        return waste
    ids = registry.building_ids()
    for _ in range(faults.after_hours_waste_count):
        b = registry.get(ids[int(injector.rng.integers(len(ids)))])
        stream = streams[(b.building_id, "energy")]
        span = injector.pick_span(stream, (24.0 * faults.waste_days[0], 24.0 * faults.waste_days[1]))
        if span is None:
            continue
        cal: Calendar = calendars[b.building_id]
        night = (cal.local_hour >= faults.waste_night_start_hour) | (cal.local_hour < faults.waste_night_end_hour)
        in_span = np.zeros(len(grid), bool)
        in_span[span[0] : span[1]] = True
        w = float(injector.rng.uniform(*faults.waste_w_m2)) * b.floor_area_m2
        waste.setdefault(b.building_id, np.zeros(len(grid)))
        waste[b.building_id] += np.where(in_span & night, w, 0.0)
        stream.__dict__.setdefault("waste_spans", []).append((span, w))
    return waste


def _record_waste(injector: Injector, stream: Stream, truth: BuildingTruth, faults: FaultConfig) -> None:
    for (lo, hi), w in stream.__dict__.get("waste_spans", []):
        excess = float(np.round(np.sum(truth.energy_kwh[lo:hi] - truth.baseline_energy_kwh[lo:hi]), 3))
        injector.record(
            "after_hours_waste", stream, *injector._span_us(lo, hi),
            excess_kwh=excess, waste_kw=round(w / 1000, 3),
            night_start_hour=faults.waste_night_start_hour, night_end_hour=faults.waste_night_end_hour,
            affected_readings=int(np.count_nonzero(truth.energy_kwh[lo:hi] != truth.baseline_energy_kwh[lo:hi])),
        )


def _inject(registry: BuildingRegistry, streams, injector: Injector, faults: FaultConfig) -> None:
    rng = injector.rng
    ids = registry.building_ids()

    def pick_building(exclude: set[str] = frozenset()) -> Building:
        choices = [b for b in ids if b not in exclude] or ids
        return registry.get(choices[int(rng.integers(len(choices)))])

    # Rare, portfolio-wide faults first, so they find room.
    if faults.dst:
        for b in registry.buildings:
            for _ in range(faults.dst_per_building):
                if not injector.dst(streams[(b.building_id, "energy")], b.timezone):
                    break
    used: set[str] = set()
    if faults.rollover:
        for _ in range(faults.rollover_count):
            b = pick_building(used)
            used.add(b.building_id)
            injector.rollover(streams[(b.building_id, "energy_cumulative")])
    if faults.reset:
        for _ in range(faults.reset_count):
            b = pick_building(used)
            used.add(b.building_id)
            injector.reset(streams[(b.building_id, "energy_cumulative")])
    if faults.unit_mixup:
        for _ in range(faults.unit_mixup_count):
            injector.unit_mixup(streams[(pick_building().building_id, "energy")])
    if faults.fahrenheit:
        for _ in range(faults.fahrenheit_count):
            injector.fahrenheit(streams[(pick_building().building_id, "indoor_temperature")])
    if faults.future_ts:
        for _ in range(faults.future_ts_count):
            injector.future_ts(streams[(pick_building().building_id, _pick(rng, list(SENSOR_SUFFIX)))])

    per_building = [
        ("stuck", faults.stuck_per_building, ("energy", "indoor_temperature", "indoor_humidity", "co2"), injector.stuck),
        ("gap", faults.gaps_per_building, tuple(SENSOR_SUFFIX), injector.gap),
        ("spike", faults.spikes_per_building, ("energy", "indoor_temperature", "co2"), injector.spike),
        ("late", faults.late_per_building, tuple(SENSOR_SUFFIX), injector.late),
        ("duplicate", faults.duplicates_per_building, tuple(SENSOR_SUFFIX), injector.duplicate),
    ]
    for b in registry.buildings:
        for kind, count, metrics, inject in per_building:
            if getattr(faults, kind):
                for k in range(count):
                    # The interval meter first: it is what the forecasts and the quality stage care most about.
                    metric = "energy" if k == 0 else _pick(rng, list(metrics))
                    inject(streams[(b.building_id, metric)])


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def repeat_text(values: list[str], counts: list[int]) -> pa.Array:
    """values[0] counts[0] times, then values[1] counts[1] times, ... built straight from buffers."""
    encoded = [v.encode() for v in values]
    lengths = np.repeat(np.array([len(e) for e in encoded], dtype=np.int64), counts)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(e * c for e, c in zip(encoded, counts))
    if offsets[-1] < 2**31 - 1:
        return pa.Array.from_buffers(pa.string(), len(lengths), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.large_string(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)]).cast(pa.string())


def _assemble_readings(registry: BuildingRegistry, streams: dict[tuple[str, str], Stream]) -> pa.Table:
    unit_of = {(b.building_id, s.metric): s.unit for b in registry.buildings for s in b.sensors}
    ts_parts, value_parts, delivery_parts, counts = [], [], [], []
    building, sensor, metric, unit = [], [], [], []
    for (bid, m), st in streams.items():
        ts = np.concatenate([st.ts[st.keep], np.asarray(st.extra_ts, dtype=np.int64)])
        ts_parts.append(ts)
        value_parts.append(np.concatenate([st.value[st.keep], np.asarray(st.extra_value, dtype=np.float64)]))
        delivery_parts.append(np.concatenate([st.delivery[st.keep], np.asarray(st.extra_delivery, dtype=np.int16)]))
        counts.append(len(ts))
        building.append(bid)
        sensor.append(st.sensor_id)
        metric.append(m)
        unit.append(unit_of[(bid, m)])
    return pa.table(
        {
            "building_id": repeat_text(building, counts),
            "sensor_id": repeat_text(sensor, counts),
            "metric": repeat_text(metric, counts),
            "ts": pa.array(np.concatenate(ts_parts), pa.int64()).cast(UTC_US),
            "value": pa.array(np.concatenate(value_parts), pa.float64()),
            "unit": repeat_text(unit, counts),
            "delivery": pa.array(np.concatenate(delivery_parts).astype(np.int16), pa.int16()),
        },
        schema=READINGS_SCHEMA,
    )


def _ground_truth(records: list[TruthRecord], drift: list, registry: BuildingRegistry, grid: np.ndarray, interval_us: int) -> pa.Table:
    end_us = int(grid[-1] + interval_us)
    rows = [r.row() for r in records]
    for e in drift:
        if isinstance(e, Retrofit):
            b = registry.get(e.building_id)
            rows.append(_drift_row("retrofit", b, "energy", _to_us(e.start), end_us, {"hvac_reduction": e.hvac_reduction}))
        elif isinstance(e, OccupancyChange):
            b = registry.get(e.building_id)
            rows.append(_drift_row("occupancy_change", b, "occupancy", _to_us(e.start), end_us, {"factor": e.factor}))
        elif isinstance(e, HeatWave):
            for b in registry.buildings_at(e.site_id):
                rows.append(
                    _drift_row("heat_wave", b, None, _to_us(e.start), _to_us(e.end), {"site_id": e.site_id, "delta_c": e.delta_c})
                )
    rows.sort(key=lambda r: (r["start"], r["kind"], r["building_id"] or "", r["sensor_id"] or ""))
    if not rows:
        return GROUND_TRUTH_SCHEMA.empty_table()
    table = pa.Table.from_pylist(rows)
    return pa.table(
        {
            "kind": table.column("kind").cast(pa.string()),
            "building_id": table.column("building_id").cast(pa.string()),
            "sensor_id": table.column("sensor_id").cast(pa.string()),
            "metric": table.column("metric").cast(pa.string()),
            "start": table.column("start").cast(pa.int64()).cast(UTC_US),
            "end": table.column("end").cast(pa.int64()).cast(UTC_US),
            "detail": table.column("detail").cast(pa.string()),
        },
        schema=GROUND_TRUTH_SCHEMA,
    )


def _drift_row(kind: str, b: Building, metric: str | None, start_us: int, end_us: int, detail: dict) -> dict:
    sensor = b.sensors_for(metric)[0].sensor_id if metric else None
    return {
        "kind": kind, "building_id": b.building_id, "sensor_id": sensor, "metric": metric,
        "start": start_us, "end": end_us, "detail": json.dumps(detail, sort_keys=True),
    }


def _weather_table(
    registry: BuildingRegistry, weather: dict[str, SiteWeather], sites: dict[str, Site], start_us: int, end_us: int, issue_hour: int, seed: int
) -> pa.Table:
    names = ["temperature_c", "relative_humidity_pct", "dew_point_c", "wind_speed_ms", "cloud_cover_pct", "solar_radiation_wm2"]
    frames = []
    first_day = start_us // 86_400_000_000 * 86_400_000_000
    issues = np.arange(first_day - 86_400_000_000, end_us - 86_400_000_000, 86_400_000_000, dtype=np.int64) + issue_hour * HOUR_US
    for site_id in registry.site_ids():
        w = weather[site_id]
        obs = (w.ts_us >= start_us) & (w.ts_us < end_us)
        frames.append(
            {
                "site_id": np.full(int(obs.sum()), site_id, dtype=object),
                "kind": np.full(int(obs.sum()), "observation", dtype=object),
                "issued_at": w.ts_us[obs],
                "ts": w.ts_us[obs],
                **{n: getattr(w, n)[obs] for n in names},
            }
        )
        site_index = [s.site_id for s in SITES].index(site_id)
        fc = day_ahead_forecasts(
            sites[site_id], w, issues, FORECAST_MAX_LEAD_H, np.random.default_rng([seed, RSEED["forecast"], site_index])
        )
        frames.append(
            {
                "site_id": np.full(len(fc["ts"]), site_id, dtype=object),
                "kind": np.full(len(fc["ts"]), "forecast", dtype=object),
                **fc,
            }
        )
    cols = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    return pa.table(
        {
            "site_id": pa.array(cols["site_id"], pa.string()),
            "kind": pa.array(cols["kind"], pa.string()),
            "issued_at": pa.array(cols["issued_at"].astype(np.int64)).cast(UTC_US),
            "ts": pa.array(cols["ts"].astype(np.int64)).cast(UTC_US),
            **{n: pa.array(cols[n].astype(np.float64)) for n in names},
        }
    )


def _truth_hourly(registry: BuildingRegistry, truths: dict[str, BuildingTruth], grid: np.ndarray) -> pa.Table:
    hour = grid // HOUR_US
    starts = np.flatnonzero(np.r_[True, np.diff(hour) != 0])
    counts = np.diff(np.r_[starts, len(grid)])
    out: dict[str, list] = {k: [] for k in ("building_id", "ts", "energy_kwh", "baseline_energy_kwh", "hvac_kwh", "occupancy_fraction", "outdoor_temperature_c")}
    for b in registry.buildings:
        t = truths[b.building_id]
        out["building_id"].append(np.full(len(starts), b.building_id, dtype=object))
        out["ts"].append(hour[starts] * HOUR_US)
        out["energy_kwh"].append(np.round(np.add.reduceat(t.energy_kwh, starts), 3))
        out["baseline_energy_kwh"].append(np.round(np.add.reduceat(t.baseline_energy_kwh, starts), 3))
        out["hvac_kwh"].append(np.add.reduceat(t.hvac_kwh, starts))
        out["occupancy_fraction"].append(np.add.reduceat(t.occupancy_fraction, starts) / counts)
        out["outdoor_temperature_c"].append(np.add.reduceat(t.outdoor_temperature_c, starts) / counts)
    return pa.table(
        {
            "building_id": pa.array(np.concatenate(out["building_id"]), pa.string()),
            "ts": pa.array(np.concatenate(out["ts"]).astype(np.int64)).cast(UTC_US),
            **{k: pa.array(np.concatenate(out[k]).astype(np.float64)) for k in list(out)[2:]},
        }
    )
