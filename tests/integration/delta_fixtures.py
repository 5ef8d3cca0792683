"""Sensor readings to push through both Delta engines (small: ~1,150 rows, a DST weekend)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from lakehouse.schemas import SENSOR_READINGS

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 30, 0, 0, tzinfo=UTC)
KEYS = list(SENSOR_READINGS.keys)


def readings(
    start: dt.datetime = T0, hours: int = 48, buildings: int = 3, batch: str = "batch-1", seed: int = 7
) -> pa.Table:
    """15-minute readings of two sensors per building across a DST weekend (48 h x 3 buildings: 1,152 rows)."""
    steps = hours * 4
    first_step = int((start - T0).total_seconds() // 900)
    ts = [start + dt.timedelta(minutes=15 * i) for i in range(steps)]
    absolute = np.arange(first_step, first_step + steps)
    rows: dict[str, list] = {k: [] for k in ("building_id", "sensor_id", "metric", "ts", "value", "unit")}
    for b in range(buildings):
        for s, (sensor, metric, unit) in enumerate((("meter-1", "energy", "kWh"), ("zone-1", "indoor_temperature", "degC"))):
            rows["building_id"] += [f"b{b:02d}"] * steps
            rows["sensor_id"] += [sensor] * steps
            rows["metric"] += [metric] * steps
            rows["ts"] += ts
            # A pure function of (building, sensor, time): overlapping intervals carry identical values.
            rows["value"] += list(np.round(25 + 20 * np.sin(absolute / 7 + b + 3 * s + seed), 3))
            rows["unit"] += [unit] * steps
    n = len(rows["ts"])
    # A missing value (the series' 6th reading of the interval) must compare equal to itself on a
    # re-run (null-safe), not count as a change.
    values = pa.array([None if i == 5 else v for i, v in enumerate(rows["value"])], pa.float64())
    return pa.table(
        {
            **{k: rows[k] for k in ("building_id", "sensor_id", "metric")},
            "ts": pa.array(rows["ts"], pa.timestamp("us", tz="UTC")),
            "value": values,
            "unit": rows["unit"],
            "source": ["simulator"] * n,
            "batch_id": [batch] * n,
            "ingested_at": pa.array([dt.datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def utc(moment: dt.datetime) -> pa.Scalar:
    return pa.scalar(moment, pa.timestamp("us", tz="UTC"))


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in KEYS])


def with_column(table: pa.Table, name: str, value: object) -> pa.Table:
    """`table` with every row's `name` set to `value` (typed as the contract says)."""
    field = SENSOR_READINGS.schema.field(name)
    return table.set_column(table.schema.get_field_index(name), field, pa.array([value] * table.num_rows, field.type))
