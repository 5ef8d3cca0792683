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
    """15-minute readings of two sensors per building across a DST weekend: ~1,150 rows over 3 dates."""
    rng = np.random.default_rng(seed)
    steps = hours * 4
    ts = [start + dt.timedelta(minutes=15 * i) for i in range(steps)]
    rows: dict[str, list] = {k: [] for k in ("building_id", "sensor_id", "metric", "ts", "value", "unit")}
    for b in range(buildings):
        for sensor, metric, unit in (("meter-1", "energy", "kWh"), ("zone-1", "indoor_temperature", "degC")):
            rows["building_id"] += [f"b{b:02d}"] * steps
            rows["sensor_id"] += [sensor] * steps
            rows["metric"] += [metric] * steps
            rows["ts"] += ts
            rows["value"] += list(np.round(rng.uniform(0, 50, steps), 3))
            rows["unit"] += [unit] * steps
    n = len(rows["ts"])
    values = pa.array(rows["value"], pa.float64())
    # A missing value must compare equal to itself on a re-run (null-safe), not count as a change.
    values = pa.array([None if i == 5 else v for i, v in enumerate(values.to_pylist())], pa.float64())
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
