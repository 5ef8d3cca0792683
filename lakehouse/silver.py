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

from lakehouse.weather_derivation import clear_sky_ghi_wm2, cloud_adjusted_ghi_wm2, relative_humidity_pct

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


def _note(flags: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    """Append `name` to the comma-separated quality_flags of the rows in `mask`."""
    return np.where(mask, np.where(flags == "", name, flags + "," + name), flags).astype(object)


def attach_weather(out: pd.DataFrame, registry, observations: pd.DataFrame | None, forecasts: pd.DataFrame | None,
                   *, derive_observed: bool = True) -> pd.DataFrame:
    """Join each building-hour to its site's observed weather and to the latest forecast issued for it.

    Shared by silver and by the forecast step's future rows, so that served inputs align as training's did.
    What a site did not send is derived where it can be (observed values always win), and named in
    `quality_flags`: relative humidity from dew point and temperature (`humidity_from_dew_point`), global
    horizontal radiation from the sun's position at the building, reduced by cloud cover where the site sends
    it (`solar_radiation_from_cloud_cover`) or clear-sky where it does not (`solar_radiation_clear_sky`); the
    same for the forecast used (`forecast_humidity_from_dew_point`, `forecast_solar_radiation_from_cloud_cover`,
    `forecast_solar_radiation_clear_sky`). `derive_observed=False` (future hours: nothing observed yet)
    leaves the observed columns empty.
    """
    site_of = {b.building_id: b.site_id for b in registry}
    tz_of = {b.building_id: b.timezone for b in registry}
    latitude_of = {b.building_id: b.latitude for b in registry}
    longitude_of = {b.building_id: b.longitude for b in registry}
    out["site_id"] = out["building_id"].map(site_of)
    obs_columns = {
        "temperature_c": "outdoor_temperature_c",
        "relative_humidity_pct": "outdoor_humidity_pct",
        "solar_radiation_wm2": "solar_radiation_wm2",
        "wind_speed_ms": "wind_speed_ms",
    }
    helpers = ["_cloud_cover_pct", "_humidity_derived", "_fc_dew_point_c", "_fc_cloud_cover_pct"]
    if observations is not None and len(observations):
        obs = observations.reindex(columns=["site_id", "ts", *obs_columns, "dew_point_c", "cloud_cover_pct"])
        obs = obs.assign(ts=obs["ts"].dt.floor("h"))
        rh = obs["relative_humidity_pct"].to_numpy(dtype=np.float64)
        from_dew = np.isnan(rh) & obs["temperature_c"].notna().to_numpy() & obs["dew_point_c"].notna().to_numpy()
        if from_dew.any():
            rh = np.where(from_dew, relative_humidity_pct(obs["temperature_c"].to_numpy(dtype=np.float64),
                                                          obs["dew_point_c"].to_numpy(dtype=np.float64)), rh)
        obs = obs.assign(relative_humidity_pct=rh, _humidity_derived=from_dew.astype(np.float64),
                         _cloud_cover_pct=obs["cloud_cover_pct"].astype(np.float64))
        hourly_obs = (obs.groupby(["site_id", "ts"], as_index=False)[[*obs_columns, "_cloud_cover_pct", "_humidity_derived"]]
                      .mean().rename(columns=obs_columns))
        out = out.merge(hourly_obs, on=["site_id", "ts"], how="left")
    else:
        for column in [*obs_columns.values(), "_cloud_cover_pct", "_humidity_derived"]:
            out[column] = np.nan

    fc_columns = {
        "temperature_c": "forecast_temperature_c",
        "relative_humidity_pct": "forecast_humidity_pct",
        "solar_radiation_wm2": "forecast_solar_radiation_wm2",
        "dew_point_c": "_fc_dew_point_c",
        "cloud_cover_pct": "_fc_cloud_cover_pct",
    }
    hours_us = out["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
    origin = np.zeros(len(out), dtype=np.int64)
    for b, rows in out.groupby("building_id", sort=False).indices.items():
        origin[rows] = forecast_origins(hours_us[rows], tz_of.get(b, "UTC"))
    out["forecast_origin"] = pd.to_datetime(origin, unit="us", utc=True)
    if forecasts is not None and len(forecasts):
        fc = forecasts.reindex(columns=["site_id", "ts", "issued_at", *fc_columns]).rename(columns=fc_columns)
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

    # Derived where missing; observed (or issued) values always win.
    flags = (out["quality_flags"].fillna("") if "quality_flags" in out else pd.Series("", index=out.index)).to_numpy(dtype=object)
    clear_sky = clear_sky_ghi_wm2(out["building_id"].map(latitude_of).to_numpy(dtype=np.float64),
                                  out["building_id"].map(longitude_of).to_numpy(dtype=np.float64), hours_us)

    def derive_solar(column: str, cloud: str, has_source: np.ndarray, prefix: str) -> None:
        nonlocal flags
        value = out[column].to_numpy(dtype=np.float64)
        cover = out[cloud].to_numpy(dtype=np.float64)
        missing = np.isnan(value) & has_source & np.isfinite(clear_sky)  # a building without a location: nothing to derive
        with_cloud = missing & ~np.isnan(cover)
        out[column] = np.where(with_cloud, cloud_adjusted_ghi_wm2(clear_sky, cover), np.where(missing, clear_sky, value))
        flags = _note(flags, with_cloud, f"{prefix}solar_radiation_from_cloud_cover")
        flags = _note(flags, missing & ~with_cloud, f"{prefix}solar_radiation_clear_sky")

    if derive_observed:
        flags = _note(flags, out["_humidity_derived"].to_numpy(dtype=np.float64) > 0, "humidity_from_dew_point")
        derive_solar("solar_radiation_wm2", "_cloud_cover_pct", np.ones(len(out), dtype=bool), "")
    else:
        for column in obs_columns.values():
            out[column] = np.nan
    fc_rh = out["forecast_humidity_pct"].to_numpy(dtype=np.float64)
    fc_t = out["forecast_temperature_c"].to_numpy(dtype=np.float64)
    fc_td = out["_fc_dew_point_c"].to_numpy(dtype=np.float64)
    fc_from_dew = np.isnan(fc_rh) & ~np.isnan(fc_t) & ~np.isnan(fc_td)
    out["forecast_humidity_pct"] = np.where(fc_from_dew, relative_humidity_pct(fc_t, fc_td), fc_rh)
    flags = _note(flags, fc_from_dew, "forecast_humidity_from_dew_point")
    # Only for hours with an issued forecast: clear sky is no forecast of the weather on its own.
    derive_solar("forecast_solar_radiation_wm2", "_fc_cloud_cover_pct", out["forecast_issued_at"].notna().to_numpy(), "forecast_")
    out["quality_flags"] = flags
    return out.drop(columns=["site_id", *helpers])
