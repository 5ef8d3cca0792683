"""Silver `building_hourly`: checked readings and weather to one row per building and UTC hour.

UTC hours make the grid DST-safe (a local day has 23 or 25 of them, none doubled). Energy comes from the
building's interval meters (kWh per reading, summed) or, without one, from its cumulative registers
(differences of consecutive readings, across a rollover by the register's capacity, from zero after a
reset). Short gaps are interpolated - only from neighbours on the same local day, so an hour's value
never depends on data after the next forecast origin - and flagged `imputed`; longer gaps stay empty
and are flagged `gap`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOUR_US = 3_600_000_000
INDOOR = {
    "indoor_temperature": "indoor_temperature_c",
    "indoor_humidity": "indoor_humidity_pct",
    "occupancy": "occupancy",
    "co2": "co2_ppm",
}
VALUE_CHECKS = ("spike", "unit_mixup_wh_kwh", "unit_mixup_fahrenheit", "physical_range", "stuck_sensor")


def _shift_in_group(values: np.ndarray, codes: np.ndarray, k: int = 1) -> np.ndarray:
    out = np.full(len(values), np.nan if values.dtype.kind == "f" else -1, dtype=values.dtype)
    if len(values) > k:
        same = codes[k:] == codes[:-k]
        out[k:][same] = values[:-k][same]
    return out


def local_dates(hours_us: np.ndarray, timezone: str) -> np.ndarray:
    """Local calendar day (days since epoch) of each UTC hour."""
    utc = pd.DatetimeIndex(pd.to_datetime(hours_us, unit="us", utc=True))
    local = utc.tz_convert(timezone).tz_localize(None)
    return (local.normalize().asi8 // 86_400_000_000_000).astype(np.int64)


def forecast_origins(hours_us: np.ndarray, timezone: str) -> np.ndarray:
    """The forecast origin of each hour: local midnight of its local day, as UTC microseconds."""
    utc = pd.DatetimeIndex(pd.to_datetime(hours_us, unit="us", utc=True))
    midnight = utc.tz_convert(timezone).tz_localize(None).normalize()
    origin = midnight.tz_localize(timezone, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")
    return origin.asi8 // 1000


def fill_gaps(energy: np.ndarray, day: np.ndarray, max_gap_h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate runs of missing hours up to `max_gap_h` long whose both neighbours are on the run's
    local day; returns (energy, imputed, gap)."""
    energy = energy.copy()
    missing = np.isnan(energy)
    imputed = np.zeros(len(energy), dtype=bool)
    if not missing.any():
        return energy, imputed, missing
    idx = np.arange(len(energy))
    left = np.maximum.accumulate(np.where(~missing, idx, -1))
    right = np.minimum.accumulate(np.where(~missing, idx, len(energy))[::-1])[::-1]
    length = right - left - 1
    fillable = missing & (left >= 0) & (right < len(energy)) & (length <= max_gap_h)
    fillable &= (day[np.clip(left, 0, len(day) - 1)] == day) & (day[np.clip(right, 0, len(day) - 1)] == day)
    if fillable.any():
        l, r = left[fillable], right[fillable]
        w = (idx[fillable] - l) / (r - l)
        energy[fillable] = energy[l] * (1 - w) + energy[r] * w
        imputed[fillable] = True
    return energy, imputed, missing & ~fillable


def reading_energy(frame: pd.DataFrame, kept: np.ndarray, ts: np.ndarray, is_interval: np.ndarray, is_register: np.ndarray) -> pd.DataFrame:
    """kWh per reading slot: interval meters as read, registers as differences of consecutive readings."""
    value = frame["value_c"].to_numpy()
    codes = frame["sensor_code"].to_numpy()
    interval = frame["interval_us"].to_numpy()

    interval_rows = np.flatnonzero(kept & is_interval)
    parts = [pd.DataFrame({"row": interval_rows, "slot_us": ts[interval_rows], "kwh": value[interval_rows]})]
    reg = np.flatnonzero(kept & is_register)
    if len(reg):
        x, t, c = value[reg], ts[reg], codes[reg]
        prev_x, prev_t = _shift_in_group(x, c), _shift_in_group(t, c)
        increment = x - prev_x
        rollover = frame["cumulative_rollover"].to_numpy()[reg]
        reset = frame["cumulative_reset"].to_numpy()[reg]
        with np.errstate(invalid="ignore", divide="ignore"):
            capacity = 10.0 ** np.ceil(np.log10(np.maximum(prev_x, 1.0)))
        increment = np.where(rollover, capacity - prev_x + x, np.where(reset, x, increment))
        # A difference across missing readings spans several slots: those hours stay gaps.
        adjacent = (prev_t >= 0) & (t - prev_t == interval[reg])
        parts.append(pd.DataFrame({"row": reg[adjacent], "slot_us": prev_t[adjacent], "kwh": increment[adjacent]}))
    return pd.concat(parts, ignore_index=True)


def hourly_from_flagged(
    frame: pd.DataFrame,
    rejected: np.ndarray,
    registry,
    settings,
    *,
    building_ids: list[str],
    start_us: int,
    end_us: int,
    observations: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Silver rows for `building_ids` x UTC hours in [start, end) from flagged readings (`checks.flag_readings`).

    `rejected` marks readings the policy sent to quarantine; warned readings stay and flag their hour.
    `observations` are checked weather observations (site_id, ts, variables); `forecasts` add issued_at.
    """
    start_h = start_us // HOUR_US * HOUR_US
    end_h = -(-end_us // HOUR_US) * HOUR_US
    hours = np.arange(start_h, end_h, HOUR_US, dtype=np.int64)
    n_h, n_b = len(hours), len(building_ids)
    b_index = {b: i for i, b in enumerate(building_ids)}
    kept = ~rejected
    ts_us = frame["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    b_of_row = pd.Categorical(frame["building_id"], categories=building_ids).codes.astype(np.int64)
    hour_of_row = (ts_us - start_h) // HOUR_US
    in_grid = (b_of_row >= 0) & (hour_of_row >= 0) & (hour_of_row < n_h)
    key = np.where(in_grid, b_of_row * n_h + hour_of_row, 0)
    size = n_b * n_h

    def per_hour(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        sel = mask & in_grid
        return np.bincount(key[sel], weights=None if weights is None else weights[sel], minlength=size)

    # Energy: interval meters where the building has one, else its registers.
    uses_interval = np.array(
        [any(s.metric == "energy" for s in registry.get(b).sensors) if b in set(registry.building_ids()) else True for b in building_ids]
    )
    metric_cat = pd.Categorical(frame["metric"])
    m_codes = metric_cat.codes
    m_names = list(metric_cat.categories)

    def metric_is(name: str) -> np.ndarray:
        return m_codes == (m_names.index(name) if name in m_names else -2)

    slots = reading_energy(frame, kept, ts_us, metric_is("energy"), metric_is("energy_cumulative"))
    rows = slots["row"].to_numpy()
    row_b = b_of_row[rows]
    is_interval = metric_is("energy")[rows]
    chosen = np.where(uses_interval[np.maximum(row_b, 0)], is_interval, ~is_interval) & (row_b >= 0)
    slot_hour = (slots["slot_us"].to_numpy() - start_h) // HOUR_US
    ok = chosen & (slot_hour >= 0) & (slot_hour < n_h)
    e_key = row_b[ok] * n_h + slot_hour[ok]
    energy_sum = np.bincount(e_key, weights=slots["kwh"].to_numpy()[ok], minlength=size)
    n_energy = np.bincount(e_key, minlength=size)

    # Expected readings per hour from each chosen meter's own reporting interval.
    default_per_hour = 60 // settings.simulator.interval_minutes
    codes = frame["sensor_code"].to_numpy()
    first_rows = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, dtype=np.int64)
    per_hour_by_sensor = {
        (str(b), str(s), str(m)): int(HOUR_US // max(int(i), 1))
        for b, s, m, i in zip(frame["building_id"].to_numpy()[first_rows], frame["sensor_id"].to_numpy()[first_rows],
                              frame["metric"].to_numpy()[first_rows], frame["interval_us"].to_numpy()[first_rows])
    }
    expected_b = np.zeros(n_b, dtype=np.int64)
    for i, b in enumerate(building_ids):
        want = "energy" if uses_interval[i] else "energy_cumulative"
        try:
            sensors = [s.sensor_id for s in registry.get(b).sensors if s.metric == want]
        except KeyError:
            sensors = []
        expected_b[i] = sum(int(per_hour_by_sensor.get((b, s, want), default_per_hour)) for s in sensors) or default_per_hour
    expected = np.repeat(expected_b, n_h)

    with np.errstate(invalid="ignore", divide="ignore"):
        energy = np.where(n_energy > 0, energy_sum * np.maximum(expected, n_energy) / n_energy, np.nan)
    partial = (n_energy > 0) & (n_energy < expected)

    energy_m = energy.reshape(n_b, n_h)
    imputed = np.zeros((n_b, n_h), dtype=bool)
    gap = np.zeros((n_b, n_h), dtype=bool)
    tz_of = {b.building_id: b.timezone for b in registry}
    for i, b in enumerate(building_ids):
        day = local_dates(hours, tz_of.get(b, "UTC"))
        energy_m[i], imputed[i], gap[i] = fill_gaps(energy_m[i], day, settings.quality.short_gap_max_h)
    imputed = imputed.ravel() | partial
    gap = gap.ravel()
    energy = energy_m.ravel()

    out = pd.DataFrame(
        {
            "building_id": np.repeat(np.array(building_ids, dtype=object), n_h),
            "ts": pd.to_datetime(np.tile(hours, n_b), unit="us", utc=True),
            "energy_kwh": energy,
        }
    )
    for m, column in INDOOR.items():
        sel = kept & metric_is(m)
        count = per_hour(sel)
        total = per_hour(sel, frame["value_c"].to_numpy())
        with np.errstate(invalid="ignore", divide="ignore"):
            out[column] = np.where(count > 0, total / np.maximum(count, 1), np.nan)

    flagged_hours = {}
    for name in VALUE_CHECKS + ("duplicate_reading", "future_timestamp", "dst_artifact", "late_arrival",
                                "cumulative_rollover", "cumulative_reset", "value_present", "unit_known"):
        flagged_hours[name] = per_hour(frame[name].to_numpy()) > 0
    # `outlier` is about the energy of the hour: a flagged indoor sensor (a stuck humidity logger, say) is
    # named in quality_flags but does not make a good meter reading unusable as a target.
    energy_rows = metric_is("energy") | metric_is("energy_cumulative")
    outlier = np.zeros(size, dtype=bool)
    for name in VALUE_CHECKS:
        outlier |= per_hour(frame[name].to_numpy() & energy_rows) > 0
    out["n_readings"] = n_energy.astype(np.int32)
    out["expected_readings"] = expected.astype(np.int32)
    out["n_rejected"] = per_hour(rejected).astype(np.int32)
    out["imputed"] = imputed
    out["gap"] = gap
    out["outlier"] = outlier
    names = np.array(list(flagged_hours) + ["imputed", "gap"], dtype=object)
    matrix = np.column_stack([flagged_hours[n] for n in flagged_hours] + [imputed, gap])
    flags = np.full(size, "", dtype=object)
    for row in np.flatnonzero(matrix.any(axis=1)):
        flags[row] = ",".join(names[matrix[row]])
    out["quality_flags"] = flags

    out = attach_weather(out, registry, observations, forecasts)
    out["date"] = out["ts"].dt.date
    return out


def attach_weather(out: pd.DataFrame, registry, observations: pd.DataFrame | None, forecasts: pd.DataFrame | None) -> pd.DataFrame:
    """Join each building-hour to its site's observed weather and to the latest forecast issued for it.

    Shared by silver and by the forecast step's future rows, so that served inputs align as training's did.
    """
    site_of = {b.building_id: b.site_id for b in registry}
    tz_of = {b.building_id: b.timezone for b in registry}
    out["site_id"] = out["building_id"].map(site_of)
    obs_columns = {
        "temperature_c": "outdoor_temperature_c",
        "relative_humidity_pct": "outdoor_humidity_pct",
        "solar_radiation_wm2": "solar_radiation_wm2",
        "wind_speed_ms": "wind_speed_ms",
    }
    if observations is not None and len(observations):
        obs = observations.assign(ts=observations["ts"].dt.floor("h"))
        hourly_obs = obs.groupby(["site_id", "ts"], as_index=False)[list(obs_columns)].mean().rename(columns=obs_columns)
        out = out.merge(hourly_obs, on=["site_id", "ts"], how="left")
    else:
        for column in obs_columns.values():
            out[column] = np.nan

    fc_columns = {
        "temperature_c": "forecast_temperature_c",
        "relative_humidity_pct": "forecast_humidity_pct",
        "solar_radiation_wm2": "forecast_solar_radiation_wm2",
    }
    hours_us = out["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    origin = np.zeros(len(out), dtype=np.int64)
    for b, rows in out.groupby("building_id", sort=False).indices.items():
        origin[rows] = forecast_origins(hours_us[rows], tz_of.get(b, "UTC"))
    out["forecast_origin"] = pd.to_datetime(origin, unit="us", utc=True)
    if forecasts is not None and len(forecasts):
        fc = forecasts[["site_id", "ts", "issued_at", *fc_columns]].rename(columns=fc_columns)
        fc = fc.assign(ts=fc["ts"].astype("datetime64[us, UTC]"), forecast_issued_at=fc["issued_at"].astype("datetime64[us, UTC]"))
        fc = fc.drop(columns=["issued_at"]).sort_values("forecast_issued_at", kind="stable")
        left = out[["site_id", "ts", "forecast_origin"]].reset_index().astype({"forecast_origin": "datetime64[us, UTC]", "ts": "datetime64[us, UTC]"})
        left = left.sort_values("forecast_origin", kind="stable")
        # The latest forecast for this hour issued strictly before its origin: no leakage by construction.
        matched = pd.merge_asof(
            left, fc, left_on="forecast_origin", right_on="forecast_issued_at", by=["site_id", "ts"],
            direction="backward", allow_exact_matches=False,
        ).set_index("index").sort_index()
        for column in [*fc_columns.values(), "forecast_issued_at"]:
            out[column] = matched[column].to_numpy()
    else:
        for column in fc_columns.values():
            out[column] = np.nan
        out["forecast_issued_at"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us, UTC]")
    return out.drop(columns=["site_id"])
