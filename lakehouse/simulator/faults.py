"""Sensor faults injected into clean streams, each recorded as ground truth with its exact span.

All streams share one UTC grid, so spans are index ranges. Value faults edit values in place; gaps
drop rows; duplicates add rows; late readings get a later delivery number; DST artefacts and future
timestamps rewrite `ts`. Spans on one sensor never overlap, so every injection can be scored alone.
Ground truth `start` is inclusive and `end` exclusive, on the readings' true timestamps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from lakehouse.simulator.config import FaultConfig

HOUR_US = 3_600_000_000


@dataclass
class Stream:
    building_id: str
    sensor_id: str
    metric: str
    value: np.ndarray
    ts: np.ndarray  # int64 microseconds, may be rewritten by DST/future faults
    keep: np.ndarray  # False where a gap removed the reading
    delivery: np.ndarray  # 0 = on time, 1 = arrives in a later batch
    extra_ts: list[int] = field(default_factory=list)  # re-sent duplicates
    extra_value: list[float] = field(default_factory=list)
    extra_delivery: list[int] = field(default_factory=list)


@dataclass
class TruthRecord:
    kind: str
    building_id: str | None
    sensor_id: str | None
    metric: str | None
    start_us: int
    end_us: int
    detail: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "building_id": self.building_id,
            "sensor_id": self.sensor_id,
            "metric": self.metric,
            "start": self.start_us,
            "end": self.end_us,
            "detail": json.dumps(self.detail, sort_keys=True),
        }


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()


class Injector:
    def __init__(self, grid_us: np.ndarray, interval_us: int, rng: np.random.Generator, config: FaultConfig) -> None:
        self.grid = grid_us
        self.interval = interval_us
        self.rng = rng
        self.config = config
        self.reserved: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self.truth: list[TruthRecord] = []

    # -- spans -------------------------------------------------------------------------------------
    def _free(self, stream: Stream, lo: int, hi: int) -> bool:
        return all(hi <= a or lo >= b for a, b in self.reserved.get((stream.building_id, stream.sensor_id), []))

    def reserve(self, stream: Stream, lo: int, hi: int) -> None:
        self.reserved.setdefault((stream.building_id, stream.sensor_id), []).append((lo, hi))

    def pick_span(self, stream: Stream, hours: tuple[float, float], margin: int = 1) -> tuple[int, int] | None:
        n = len(self.grid)
        per_hour = HOUR_US // self.interval
        for _ in range(50):
            length = max(1, int(round(self.rng.uniform(*hours) * per_hour)))
            if length + 2 * margin >= n:
                return None
            lo = int(self.rng.integers(margin, n - length - margin))
            if self._free(stream, lo - margin, lo + length + margin):
                self.reserve(stream, lo - margin, lo + length + margin)
                return lo, lo + length
        return None

    def pick_point(self, stream: Stream) -> int | None:
        span = self.pick_span(stream, (0.0, 0.0))
        return None if span is None else span[0]

    def record(self, kind: str, stream: Stream | None, lo_us: int, hi_us: int, **detail: Any) -> None:
        self.truth.append(
            TruthRecord(
                kind,
                stream.building_id if stream else detail.pop("building_id", None),
                stream.sensor_id if stream else None,
                stream.metric if stream else None,
                int(lo_us),
                int(hi_us),
                detail,
            )
        )

    def _span_us(self, lo: int, hi: int) -> tuple[int, int]:
        return int(self.grid[lo]), int(self.grid[hi - 1] + self.interval)

    # -- faults ------------------------------------------------------------------------------------
    def gap(self, s: Stream) -> None:
        span = self.pick_span(s, self.config.gap_hours)
        if span:
            s.keep[span[0] : span[1]] = False
            self.record("gap", s, *self._span_us(*span), missing_readings=span[1] - span[0])

    def spike(self, s: Stream) -> None:
        i = self.pick_point(s)
        if i is None:
            return
        clean = float(s.value[i])
        if s.metric == "indoor_temperature":
            spiked = clean + float(self.rng.uniform(*self.config.spike_delta_c)) * self.rng.choice([-1, 1])
        else:
            spiked = max(clean, 1.0) * float(self.rng.uniform(*self.config.spike_factor))
        s.value[i] = round(spiked, 3)
        self.record("spike", s, *self._span_us(i, i + 1), clean_value=clean, spiked_value=float(s.value[i]))

    def stuck(self, s: Stream) -> None:
        span = self.pick_span(s, self.config.stuck_hours)
        if span:
            lo, hi = span
            s.value[lo:hi] = s.value[lo]
            self.record("stuck", s, *self._span_us(lo, hi), stuck_value=float(s.value[lo]), readings=hi - lo)

    def duplicate(self, s: Stream) -> None:
        i = self.pick_point(s)
        if i is None:
            return
        changed = bool(self.rng.random() < self.config.duplicate_changed_share)
        resent = round(float(s.value[i]) * (1 + self.config.duplicate_value_change), 3) if changed else float(s.value[i])
        s.extra_ts.append(int(s.ts[i]))
        s.extra_value.append(resent)
        s.extra_delivery.append(int(s.delivery[i]))
        self.record(
            "duplicate", s, *self._span_us(i, i + 1), original_value=float(s.value[i]), resent_value=resent, same_value=not changed
        )

    def late(self, s: Stream) -> None:
        span = self.pick_span(s, self.config.late_hours)
        if span:
            s.delivery[span[0] : span[1]] = 1
            self.record("late", s, *self._span_us(*span), delivery=1, readings=span[1] - span[0])

    def unit_mixup(self, s: Stream) -> None:
        span = self.pick_span(s, self.config.unit_mixup_hours)
        if span:
            s.value[span[0] : span[1]] = np.round(s.value[span[0] : span[1]] * 1000.0, 3)
            self.record("unit_mixup", s, *self._span_us(*span), factor=1000.0, labelled_unit="kWh", actual_unit="Wh")

    def fahrenheit(self, s: Stream) -> None:
        span = self.pick_span(s, self.config.fahrenheit_hours)
        if span:
            s.value[span[0] : span[1]] = np.round(s.value[span[0] : span[1]] * 9 / 5 + 32, 2)
            self.record("fahrenheit", s, *self._span_us(*span), labelled_unit="degC", actual_unit="degF")

    def rollover(self, s: Stream) -> None:
        """The register reaches its capacity at a chosen reading and wraps to zero, counting on."""
        i = self.pick_point(s)
        if i is None or i == 0:
            return
        capacity = self.config.register_capacity_kwh
        consumed_before = float(s.value[i] - s.value[0])
        if consumed_before >= capacity:
            return
        # Shift the whole register so that it crosses `capacity` exactly between readings i-1 and i.
        shift = capacity - float(s.value[i]) + float(np.round(self.rng.uniform(0, s.value[i] - s.value[i - 1]), 3))
        s.value[:] = np.round(np.mod(s.value + shift, capacity), 3)
        self.record(
            "rollover", s, *self._span_us(i, i + 1),
            capacity_kwh=capacity, value_before=float(s.value[i - 1]), value_after=float(s.value[i]),
        )

    def reset(self, s: Stream) -> None:
        """The register is reset to zero (meter exchange, firmware update) and counts on from there."""
        i = self.pick_point(s)
        if i is None or i == 0:
            return
        before = float(s.value[i - 1])
        s.value[i:] = np.round(s.value[i:] - before, 3)
        self.record("reset", s, *self._span_us(i, i + 1), value_before=before, value_after=float(s.value[i]))

    def future_ts(self, s: Stream) -> None:
        """A clock gone wrong stamps a reading days after the last reading of the whole run."""
        i = self.pick_point(s)
        if i is None:
            return
        days = self.rng.uniform(*self.config.future_days)
        grid_end = int(self.grid[-1]) + self.interval
        stamped = grid_end + int(round(days * 86_400e6 / self.interval)) * self.interval
        s.ts[i] = stamped
        self.record(
            "future_ts", s, *self._span_us(i, i + 1),
            stamped_ts=_iso(stamped), days_after_end=round((stamped - grid_end) / 86_400e6, 4),
        )

    def dst(self, s: Stream, tz: str) -> bool:
        """Around a DST switch the device stamps local wall time and the pipeline reads it as UTC."""
        switches = dst_switches(self.grid, tz)
        half = int(self.config.dst_window_hours * HOUR_US / 2)
        for switch_us, before_h, after_h in switches:
            lo = int(np.searchsorted(self.grid, switch_us - half))
            hi = int(np.searchsorted(self.grid, switch_us + half))
            reach = int(np.ceil(max(abs(before_h), abs(after_h)) * HOUR_US / self.interval)) + 1
            if lo <= 0 or hi >= len(self.grid) or not self._free(s, lo - reach, hi + reach):
                continue
            self.reserve(s, lo - reach, hi + reach)
            offsets = np.where(s.ts[lo:hi] < switch_us, before_h, after_h) * HOUR_US
            s.ts[lo:hi] = s.ts[lo:hi] + offsets.astype(np.int64)
            self.record(
                "dst", s, *self._span_us(lo, hi),
                switch_utc=_iso(switch_us), offset_before_h=before_h, offset_after_h=after_h, timezone=tz,
                direction="spring_forward" if after_h > before_h else "fall_back",
            )
            return True
        return False


def dst_switches(grid_us: np.ndarray, tz: str) -> list[tuple[int, float, float]]:
    """(UTC instant, UTC offset before in hours, after) for each DST switch inside the grid."""
    import pandas as pd

    hours = np.arange(grid_us[0] // HOUR_US * HOUR_US, grid_us[-1] + 1, HOUR_US)
    utc = pd.DatetimeIndex(pd.to_datetime(hours, unit="us", utc=True))
    offsets = ((utc.tz_convert(tz).tz_localize(None) - utc.tz_localize(None)) / pd.Timedelta(hours=1)).to_numpy()
    changes = np.flatnonzero(np.diff(offsets) != 0) + 1
    return [(int(hours[c]), float(offsets[c - 1]), float(offsets[c])) for c in changes]
