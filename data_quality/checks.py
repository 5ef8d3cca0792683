"""Row-level checks building sensor data needs, computed column-at-a-time with numpy.

Great Expectations validates what these produce (flag counts per sensor and day, see `suites`): running
per-row Python inside GE costs ~15 s per 4 M readings, these vectorised passes cost well under a second
each. Every check has a name; that name is the expectation's name, the quarantine `check_name` and the
key of `settings.quality.policies`.

Sequence checks (stuck, spike, rollover, reset, DST) look at each sensor's readings in time order, after
the readings that cannot take part in a sequence (duplicates, future stamps, unknown units) are set aside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HOUR_US = 3_600_000_000

# Canonical unit per metric and how other labels convert to it: (scale, offset) with v_c = v * scale + offset.
CANONICAL_UNITS: dict[str, str] = {
    "energy": "kWh",
    "energy_cumulative": "kWh",
    "indoor_temperature": "degC",
    "indoor_humidity": "%",
    "occupancy": "people",
    "co2": "ppm",
}
UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "energy": {"kwh": (1.0, 0.0), "wh": (1e-3, 0.0), "mwh": (1e3, 0.0)},
    "energy_cumulative": {"kwh": (1.0, 0.0), "wh": (1e-3, 0.0), "mwh": (1e3, 0.0)},
    "indoor_temperature": {
        "degc": (1.0, 0.0), "c": (1.0, 0.0), "°c": (1.0, 0.0), "celsius": (1.0, 0.0),
        "degf": (5 / 9, -32 * 5 / 9), "f": (5 / 9, -32 * 5 / 9), "°f": (5 / 9, -32 * 5 / 9),
        "k": (1.0, -273.15),
    },
    "indoor_humidity": {"%": (1.0, 0.0), "pct": (1.0, 0.0), "%rh": (1.0, 0.0), "percent": (1.0, 0.0)},
    "occupancy": {"people": (1.0, 0.0), "persons": (1.0, 0.0), "count": (1.0, 0.0), "": (1.0, 0.0)},
    "co2": {"ppm": (1.0, 0.0)},
}


@dataclass(frozen=True)
class ReadingCheck:
    name: str
    description: str


# Order is priority: a reading failing several checks is quarantined under the first.
READING_CHECKS: tuple[ReadingCheck, ...] = (
    ReadingCheck("value_present", "the reading carries a finite value"),
    ReadingCheck("unit_known", "the unit label converts to the metric's canonical unit"),
    ReadingCheck("duplicate_reading", "one reading per sensor and timestamp (the last delivered wins)"),
    ReadingCheck("future_timestamp", "timestamp no later than delivery + quality.max_future_skew_h"),
    ReadingCheck("dst_artifact", "no missing or doubled slots around a DST switch (local time read as UTC)"),
    ReadingCheck("unit_mixup_wh_kwh", "energy not ~1000x the sensor's own median (Wh labelled kWh)"),
    ReadingCheck("unit_mixup_fahrenheit", "indoor temperature not degF labelled degC (by the sensor's median)"),
    ReadingCheck("physical_range", "value inside quality.physical_ranges for its metric"),
    ReadingCheck("spike", "not an isolated outlier: |x - rolling median| <= k * 1.4826 * MAD (Hampel)"),
    ReadingCheck("stuck_sensor", "no run of identical values longer than the sensor's resolution makes plausible (stuck_run_limits)"),
    ReadingCheck("cumulative_rollover", "register drops only by wrapping at its capacity"),
    ReadingCheck("cumulative_reset", "register does not drop without wrapping"),
    ReadingCheck("late_arrival", "delivered in order: not after readings stamped later"),
)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in READING_CHECKS)


@dataclass
class FlaggedReadings:
    """Readings in (building, sensor, ts) order with the canonical value and one boolean per check."""

    frame: pd.DataFrame  # input columns + value_c, interval_us, sensor_code, + one bool column per check
    check_names: tuple[str, ...] = CHECK_NAMES

    def first_failed(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Index into `names` of the first check each row fails, -1 where it fails none of them."""
        out = np.full(len(self.frame), -1, dtype=np.int16)
        for i, name in enumerate(names):
            hit = self.frame[name].to_numpy() & (out < 0)
            out[hit] = i
        return out


def _ts_us(series: pd.Series) -> np.ndarray:
    if not isinstance(series.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_any_dtype(series):
        series = pd.to_datetime(series, utc=True)
    if getattr(series.dt, "tz", None) is None:
        series = series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC").astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)


def _group_starts(codes: np.ndarray) -> np.ndarray:
    """True where a row starts a new group in an array sorted by group."""
    starts = np.ones(len(codes), dtype=bool)
    starts[1:] = codes[1:] != codes[:-1]
    return starts


def _shift(values: np.ndarray, codes: np.ndarray, k: int, fill=np.nan) -> np.ndarray:
    """values shifted by k within groups (k > 0 looks back), `fill` across group edges."""
    out = np.full(len(values), fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    if k == 0:
        return values.astype(out.dtype)
    if abs(k) >= len(values):
        return out
    if k > 0:
        same = codes[k:] == codes[:-k]
        out[k:][same] = values[:-k][same]
    else:
        same = codes[:k] == codes[-k:]
        out[:k][same] = values[-k:][same]
    return out


def _group_median(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of finite values per group code (NaN where a group has none)."""
    s = pd.Series(values).groupby(codes).median()
    out = np.full(n_groups, np.nan)
    out[s.index.to_numpy()] = s.to_numpy()
    return out


def _run_lengths(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Length of the run of equal consecutive values (within a group) each row belongs to."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (values[1:] != values[:-1]) | (codes[1:] != codes[:-1])
    run_id = np.cumsum(new_run) - 1
    lengths = np.bincount(run_id)
    return lengths[run_id]


def _hampel(values: np.ndarray, codes: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(x - median of the centred window of the same sensor, that median); edges use what exists."""
    half = window // 2
    stack = np.stack([_shift(values, codes, k) for k in range(-half, half + 1)], axis=1)
    with np.errstate(all="ignore"):
        stack.sort(axis=1)  # NaN sorts last
        valid = np.isfinite(stack).sum(axis=1)
        lo = np.take_along_axis(stack, np.maximum((valid - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(stack, np.maximum(valid // 2, 0)[:, None], axis=1)[:, 0]
        median = (lo + hi) / 2
        return values - median, median


def _canonical(m_codes: np.ndarray, m_uniques, unit: pd.Series | None, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value in the metric's canonical unit, and a mask of unit labels that do not convert.

    Works on factorised codes: a batch has millions of readings but a handful of (metric, unit) pairs.
    """
    out = np.full(len(value), np.nan)
    known = np.zeros(len(value), dtype=bool)
    if unit is None:
        u_codes, u_uniques = np.full(len(value), -1, dtype=np.int64), []
    else:
        u_codes, u_uniques = pd.factorize(unit)
    labels = [str(u).strip().lower() for u in u_uniques] + [""]  # code -1 (missing) -> ""
    u_codes = np.where(u_codes < 0, len(labels) - 1, u_codes).astype(np.int64)
    pair = m_codes.astype(np.int64) * len(labels) + u_codes
    present = np.flatnonzero(np.bincount(pair, minlength=len(m_uniques) * len(labels)))
    for p in present:
        m, label = m_uniques[p // len(labels)], labels[p % len(labels)]
        conversions = UNIT_CONVERSIONS.get(m)
        key = label or CANONICAL_UNITS.get(m, "").lower()
        if conversions is None or key not in conversions:
            continue
        scale, offset = conversions[key]
        sel = pair == p
        out[sel] = value[sel] * scale + offset if (scale, offset) != (1.0, 0.0) else value[sel]
        known[sel] = True
    return out, ~known


def sensor_resolution(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per sensor code, the smallest positive change between consecutive readings (0 where none)."""
    steps = np.abs(np.diff(values, prepend=np.nan))
    steps[_group_starts(codes)] = np.nan
    positive = np.isfinite(steps) & (steps > 1e-9)
    out = np.zeros(n_groups)
    if positive.any():
        s = pd.Series(steps[positive]).groupby(codes[positive]).min()
        out[s.index.to_numpy()] = s.to_numpy()
    return out


def stuck_run_limits(runs: np.ndarray, codes: np.ndarray, interval_us: np.ndarray, n_groups: int, quality) -> np.ndarray:
    """Per sensor code, the shortest run of identical consecutive readings that counts as stuck.

    A live sensor repeats a value as often as its resolution and interval make it: a 0.1 K thermometer
    in a still room, a 10 Wh appliance meter at night, an hourly building meter almost never. Let p be
    the sensor's share of consecutive readings that repeat, counted outside runs of the minimum stuck length
    (so a stuck stretch does not make itself look normal). A run of L equal readings then happens by
    chance about n * p^(L-1) times in n readings; the limit is the shortest L where that expectation
    falls below `quality.stuck_false_alarms`, and never shorter than `stuck_min_hours` of readings
    (at the sensor's interval) nor `stuck_run_length` readings.
    """
    n_readings = np.bincount(codes, minlength=n_groups).astype(np.float64)
    hours = np.ceil(quality.stuck_min_hours * HOUR_US / np.maximum(interval_us[:n_groups], 1))
    floor = np.maximum(hours, float(quality.stuck_run_length))
    short = runs < floor[codes]
    # A run of length r holds r - 1 repeats; each row of it carries (r - 1) / r of them.
    repeats = np.bincount(codes[short], weights=(runs[short] - 1) / runs[short], minlength=n_groups)
    pairs = np.maximum(n_readings - 1.0, 1.0)
    p = np.clip(repeats / pairs, 1e-4, 0.99)
    chance = 1.0 + np.log(quality.stuck_false_alarms / np.maximum(n_readings, 1.0)) / np.log(p)
    return np.maximum(np.ceil(chance), floor).astype(np.int64)


def dst_switches_utc(timezone: str, start_us: int, end_us: int) -> list[tuple[int, float, float]]:
    """(UTC instant, offset before h, offset after h) of each DST switch of `timezone` in [start, end)."""
    hours = np.arange(start_us // HOUR_US * HOUR_US, end_us + HOUR_US, HOUR_US)
    if len(hours) < 2:
        return []
    utc = pd.DatetimeIndex(pd.to_datetime(hours, unit="us", utc=True))
    local = utc.tz_convert(timezone).tz_localize(None)
    offsets = ((local - utc.tz_localize(None)) / pd.Timedelta(hours=1)).to_numpy()
    changes = np.flatnonzero(np.diff(offsets) != 0) + 1
    return [(int(hours[c]), float(offsets[c - 1]), float(offsets[c])) for c in changes]


def flag_readings(readings: pd.DataFrame, registry, quality) -> FlaggedReadings:
    """Run every reading check. `quality` is `settings.quality`; `registry` gives time zones.

    `readings` has the bronze columns (building_id, sensor_id, metric, ts, value, unit; ingested_at
    optional). It may be a raw batch with duplicate keys: a re-sent reading is flagged, not lost.
    """
    readings = readings.reset_index(drop=True)
    n = len(readings)
    ts = _ts_us(readings["ts"])
    ingested = (_ts_us(readings["ingested_at"]) if "ingested_at" in readings and readings["ingested_at"].notna().all() else None)
    building_codes, building_uniques = pd.factorize(readings["building_id"], sort=True)
    s_codes_only, s_uniques = pd.factorize(readings["sensor_id"], sort=True)
    sensor_codes_raw, _ = pd.factorize(building_codes.astype(np.int64) * (len(s_uniques) + 1) + s_codes_only, sort=True)
    order = np.lexsort((np.arange(n), ingested if ingested is not None else np.zeros(n, np.int64), ts, sensor_codes_raw))
    ts, codes = ts[order], sensor_codes_raw[order].astype(np.int64)
    building_codes = building_codes[order]
    ingested = ingested[order] if ingested is not None else None
    n_groups = int(codes.max()) + 1 if n else 0
    m_codes, m_uniques = pd.factorize(readings["metric"])
    m_codes = m_codes[order]
    m_uniques = list(m_uniques)

    def code_of(*names: str) -> list[int]:
        return [m_uniques.index(m) for m in names if m in m_uniques]

    def metric_is(codes_: np.ndarray, *names: str) -> np.ndarray:
        return np.isin(codes_, code_of(*names))

    raw_value = pd.to_numeric(readings["value"], errors="coerce").to_numpy(dtype=np.float64)[order]
    unit = readings["unit"].take(order) if "unit" in readings else None
    df = pd.DataFrame(
        {
            "building_id": pd.Categorical.from_codes(building_codes, categories=pd.Index(building_uniques).astype(str)),
            "sensor_id": pd.Categorical.from_codes(s_codes_only[order], categories=pd.Index(s_uniques).astype(str)),
            "metric": pd.Categorical.from_codes(m_codes, categories=pd.Index(m_uniques).astype(str)),
            "ts": pd.to_datetime(ts, unit="us", utc=True),
            "value": raw_value,
        }
    )
    for extra in ("unit", "source", "ingested_at", "batch_id"):
        if extra in readings:
            df[extra] = readings[extra].take(order).reset_index(drop=True)

    flags = {name: np.zeros(n, dtype=bool) for name in CHECK_NAMES}
    flags["value_present"] = ~np.isfinite(raw_value)
    value_c, unit_unknown = _canonical(m_codes, m_uniques, unit, raw_value)
    flags["unit_known"] = unit_unknown & ~flags["value_present"]

    # Re-sent readings: every row but the last delivered of a (sensor, ts) slot.
    same_as_next = np.zeros(n, dtype=bool)
    if n > 1:
        same_as_next[:-1] = (codes[1:] == codes[:-1]) & (ts[1:] == ts[:-1])
    flags["duplicate_reading"] = same_as_next
    if ingested is not None:
        flags["future_timestamp"] = ts > ingested + int(quality.max_future_skew_h * HOUR_US)

    # The sensor's reporting interval: the most common step between its readings.
    steps = np.diff(ts, prepend=ts[:1])
    steps[_group_starts(codes)] = 0
    step_frame = pd.DataFrame({"c": codes, "s": steps})
    step_frame = step_frame[step_frame["s"] > 0]
    interval_by_code = np.full(n_groups, 15 * 60 * 1_000_000, dtype=np.int64)
    if len(step_frame):
        counts = step_frame.value_counts(sort=True).reset_index()  # most frequent (sensor, step) first
        modes = counts.drop_duplicates("c", keep="first")
        interval_by_code[modes["c"].to_numpy()] = modes["s"].to_numpy()
    interval = interval_by_code[codes] if n else np.zeros(0, dtype=np.int64)

    # DST: a device stamping local wall time leaves holes and doubled slots around the switch.
    if n:
        tz_by_building = {b.building_id: b.timezone for b in registry}
        window = int(quality.dst_window_h * HOUR_US / 2)
        set_aside = flags["future_timestamp"] | flags["value_present"]
        for b_code, building_id in enumerate(building_uniques):
            tz = tz_by_building.get(building_id)
            rows = np.flatnonzero(building_codes == b_code)
            if tz is None or len(rows) == 0:
                continue
            for switch, before_h, after_h in dst_switches_utc(tz, int(ts[rows].min()), int(ts[rows].max())):
                reach = int((max(abs(before_h), abs(after_h)) + 1) * HOUR_US)
                near = rows[(ts[rows] >= switch - window - reach) & (ts[rows] < switch + window + reach)]
                for code in np.unique(codes[near]):
                    inside = near[(codes[near] == code) & ~set_aside[near]]
                    step = int(interval_by_code[code])
                    slots = ts[inside][(ts[inside] >= switch - window) & (ts[inside] < switch + window)]
                    expected = 2 * window // step
                    doubled = len(slots) != len(np.unique(slots))
                    if doubled or len(np.unique(slots)) < expected:
                        flags["dst_artifact"][inside] = True

    set_aside = flags["value_present"] | flags["unit_known"] | flags["duplicate_reading"] | flags["future_timestamp"] | flags["dst_artifact"]

    # Magnitude against the sensor's own history (its median in this batch).
    seq = np.flatnonzero(~set_aside)
    s_codes, s_val, s_metric = codes[seq], value_c[seq], m_codes[seq]
    median_by_code = _group_median(np.where(s_val > 0, s_val, np.nan), s_codes, n_groups)
    baseline = median_by_code[s_codes] if len(seq) else np.zeros(0)
    # Interval meters only: a register's level says nothing about its unit (it may just have wrapped).
    is_energy = metric_is(s_metric, "energy")
    with np.errstate(invalid="ignore", divide="ignore"):
        mixup = is_energy & (baseline > 0) & (s_val > quality.unit_mixup_ratio * baseline)
    flags["unit_mixup_wh_kwh"][seq[mixup]] = True
    is_temp = metric_is(s_metric, "indoor_temperature")
    temp_median = _group_median(np.where(is_temp, s_val, np.nan), s_codes, n_groups)[s_codes] if len(seq) else np.zeros(0)
    as_celsius = (s_val - 32.0) * 5.0 / 9.0
    fahrenheit = is_temp & (s_val - temp_median > quality.fahrenheit_min_excess_c) & (np.abs(as_celsius - temp_median) < quality.fahrenheit_match_c)
    flags["unit_mixup_fahrenheit"][seq[fahrenheit]] = True

    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    for m, (lo_m, hi_m) in quality.physical_ranges.items():
        sel = metric_is(m_codes, m)
        lo[sel], hi[sel] = lo_m, hi_m
    with np.errstate(invalid="ignore"):
        out_of_range = ((value_c < lo) | (value_c > hi)) & ~set_aside
    flags["physical_range"] = out_of_range & ~flags["unit_mixup_wh_kwh"] & ~flags["unit_mixup_fahrenheit"]

    set_aside = set_aside | flags["unit_mixup_wh_kwh"] | flags["unit_mixup_fahrenheit"] | flags["physical_range"]
    seq = np.flatnonzero(~set_aside)
    s_codes, s_val, s_metric = codes[seq], value_c[seq], m_codes[seq]
    cumulative = metric_is(s_metric, "energy_cumulative")

    # Spikes. Interval sensors: Hampel filter. Registers: a reading far off the line through its
    # neighbours while the neighbours agree with each other (a wrap or reset does not come back).
    spike = np.zeros(len(seq), dtype=bool)
    spike_metric = metric_is(s_metric, *quality.spike_metrics)
    plain = spike_metric & ~cumulative
    if plain.any():
        idx = np.flatnonzero(plain)
        residual, local = _hampel(s_val[idx], s_codes[idx], quality.spike_window)
        mad = _group_median(np.abs(residual), s_codes[idx], n_groups)[s_codes[idx]]
        floor = np.zeros(len(idx))
        for m, v in quality.spike_absolute_floor.items():
            floor[metric_is(s_metric[idx], m)] = v
        # Floors keep smooth or quantised sensors from flagging their own ramps and noise: a share of the
        # local level, a floor per metric, and a few steps of the sensor's own resolution (its smallest
        # change between readings: 10 Wh for a 10 Wh meter, 0.1 kWh for a rounded export).
        resolution = sensor_resolution(s_val[idx], s_codes[idx], n_groups)[s_codes[idx]]
        scale = np.maximum.reduce([np.nan_to_num(1.4826 * mad), quality.spike_relative_floor * np.abs(local), floor,
                                   quality.spike_resolution_steps * resolution])
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1e-3)
        spike[idx] = np.abs(residual) > quality.spike_mad_threshold * scale
    reg = cumulative & spike_metric
    if reg.any():
        idx = np.flatnonzero(reg)
        x, c = s_val[idx], s_codes[idx]
        prev, nxt = _shift(x, c, 1), _shift(x, c, -1)
        inc = np.diff(x, prepend=np.nan)
        inc[_group_starts(c)] = np.nan
        typical = _group_median(np.where(inc > 0, inc, np.nan), c, n_groups)
        typical = np.where(np.isfinite(typical) & (typical > 0), typical, 1.0)[c]
        with np.errstate(invalid="ignore"):
            neighbours_agree = (nxt - prev >= 0) & (nxt - prev <= 2 * quality.spike_mad_threshold * typical)
            off_line = np.abs(x - (prev + nxt) / 2) > quality.spike_mad_threshold * typical
        spike[idx] = neighbours_agree & off_line
    flags["spike"][seq[spike]] = True

    # Stuck: a run of identical values longer than the sensor's own resolution makes plausible.
    stuck_metric = metric_is(s_metric, *quality.stuck_metrics) & ~spike
    if stuck_metric.any():
        idx = np.flatnonzero(stuck_metric)
        c = s_codes[idx]
        runs = _run_lengths(s_val[idx], c)
        limit = stuck_run_limits(runs, c, interval_by_code, n_groups, quality)
        flags["stuck_sensor"][seq[idx[runs >= limit[c]]]] = True

    # Register drops, after spikes are out of the way.
    keep = cumulative & ~spike
    if keep.any():
        idx = np.flatnonzero(keep)
        x, c = s_val[idx], s_codes[idx]
        prev = _shift(x, c, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            drop = x < prev
            capacity = 10.0 ** np.ceil(np.log10(np.maximum(prev, 1.0)))
            rollover = drop & (prev >= quality.rollover_fraction * capacity) & (x < (1 - quality.rollover_fraction) * capacity)
        flags["cumulative_rollover"][seq[idx[rollover]]] = True
        flags["cumulative_reset"][seq[idx[drop & ~rollover]]] = True

    # Late: delivered after a reading of the same sensor stamped later had already arrived.
    if ingested is not None and n:
        ok = np.flatnonzero(~(flags["duplicate_reading"] | flags["future_timestamp"]))
        rev = pd.Series(ingested[ok][::-1]).groupby(codes[ok][::-1]).cummin().to_numpy()[::-1]
        later_min = _shift(rev, codes[ok], -1, fill=np.iinfo(np.int64).max)
        flags["late_arrival"][ok[ingested[ok] > later_min]] = True

    df["value_c"] = value_c
    df["interval_us"] = interval
    df["sensor_code"] = codes
    for name in CHECK_NAMES:
        df[name] = flags[name]
    return FlaggedReadings(frame=df)
