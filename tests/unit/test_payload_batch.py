"""The shared payload format (lakehouse/sources/payload.py): the compact batch form round-trips, any batch a
device can garble decodes without raising and accounts for every reading, and JSON and batch messages in
one micro-batch land the same rows as either alone."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse.bronze import validate_readings
from lakehouse.sources.payload import BATCH_FORMAT, decode_message, encode_batch, encode_json, readings_table
from tests.integration.stream_fixtures import SENSORS, small_registry

ORIGIN = {"topic": "sensor-readings", "partition": 2, "offset": 417}
REGISTRY = small_registry(1)
BATCH_CHECKS = {"malformed_batch", "not_a_reading", "unparseable_timestamp", "non_numeric_value", "malformed_json"}

readings = st.lists(
    st.tuples(
        st.sampled_from(SENSORS),
        st.integers(min_value=1_600_000_000, max_value=1_900_000_000),  # epoch seconds
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
    ),
    min_size=1, max_size=40,
)


def _table(rows) -> pa.Table:
    return pa.table({
        "building_id": ["b0"] * len(rows),
        "sensor_id": [s[0] for s, _, _ in rows],
        "metric": [s[1] for s, _, _ in rows],
        "ts": pa.array([t * 1_000_000 for _, t, _ in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "value": pa.array([v for _, _, v in rows], pa.float64()),
        "unit": [s[2] for s, _, _ in rows],
    })


@settings(max_examples=150, deadline=None)
@given(readings)
def test_batch_form_round_trips_every_reading(rows) -> None:
    table = _table(rows)
    decoded = decode_message(encode_batch(table), origin=ORIGIN)
    assert decoded.rejected == [] and decoded.readings == len(rows)
    assert decoded.batch.to_pylist() == table.to_pylist()  # same order, values, nulls and units


garbage = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30), st.floats(), st.text(max_size=12),
                    st.lists(st.integers(), max_size=2), st.sampled_from(["2026-01-05T00:00:00Z", "1.5", "nope", "", "NaN"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings, st.lists(st.tuples(st.sampled_from(["sensor", "ts", "value"]), st.integers(min_value=0, max_value=39), garbage), max_size=6))
def test_a_garbled_batch_never_raises_and_accounts_for_every_reading(rows, edits) -> None:
    doc = json.loads(encode_batch(_table(rows)))
    for column, index, value in edits:
        doc[column][index % len(rows)] = value
    payload = json.dumps(doc, allow_nan=True).encode()
    decoded = decode_message(payload, origin=ORIGIN)
    for r in decoded.rejected:
        assert r.check_name in BATCH_CHECKS and len(r.reason) > 10
        raw = json.loads(r.raw)
        assert (raw["topic"], raw["partition"], raw["offset"]) == ("sensor-readings", 2, 417)  # where it came from
    assert decoded.readings + len(decoded.rejected) == len(rows)  # each reading lands on or is rejected, once
    good = validate_readings(readings_table([decoded]), REGISTRY)  # bronze takes whatever came through
    assert good.good.num_rows + good.rejected.num_rows == decoded.readings


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": "wattflow.readings/v9"}, "'format'"),
        ({"sensors": []}, "'sensors'"),
        ({"sensors": [{"sensor_id": 3, "metric": "energy", "unit": "kWh"}]}, "'sensors[0]'"),
        ({"ts": [1767571200]}, "lengths are sensor=2, ts=1, value=2"),
        ({"value": "1.5"}, "'value'"),
        ({"building_id": 7}, "'building_id'"),
    ],
)
def test_a_malformed_batch_is_one_rejection_naming_the_field(change, field) -> None:
    doc = {"format": BATCH_FORMAT, "building_id": "b0", "sensors": [{"sensor_id": "main_meter", "metric": "energy", "unit": "kWh"}],
           "sensor": [0, 0], "ts": [1767571200, 1767572100], "value": [1.0, 2.0], **change}
    decoded = decode_message(json.dumps(doc).encode(), origin=ORIGIN)
    assert decoded.readings == 0 and len(decoded.rejected) == 1
    rejected = decoded.rejected[0]
    assert rejected.check_name == "malformed_batch" and field in rejected.reason
    assert json.loads(rejected.raw)["payload"] == json.dumps(doc)  # as received


def test_the_transport_names_the_building_when_the_batch_does_not() -> None:
    doc = json.loads(encode_batch(_table([(SENSORS[0], 1767571200, 1.5)])))
    del doc["building_id"]
    decoded = decode_message(json.dumps(doc).encode(), ids={"building_id": "b0"}, origin=ORIGIN)  # a Kafka key
    assert decoded.batch.column("building_id").to_pylist() == ["b0"]
    orphan = decode_message(json.dumps(doc).encode(), origin=ORIGIN)
    assert orphan.rejected[0].check_name == "malformed_batch" and "names no building" in orphan.rejected[0].reason


def test_json_and_batch_messages_in_one_micro_batch_land_the_same_rows_as_each_alone() -> None:
    rows = [(SENSORS[k % 2], 1767571200 + 900 * k, 1.0 + k) for k in range(8)]
    batch_msg = encode_batch(_table(rows[:4]))
    json_msg = encode_json([{"sensor_id": s[0], "metric": s[1], "unit": s[2], "value": v,
                             "ts": datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")} for s, t, v in rows[4:]])
    mixed = readings_table([decode_message(batch_msg, origin=ORIGIN), decode_message(json_msg, ids={"building_id": "b0"}, origin=ORIGIN)])
    landed = validate_readings(mixed, REGISTRY).good
    assert landed.num_rows == 8
    alone = validate_readings(_table(rows), REGISTRY).good
    key = ["sensor_id", "ts", "value", "unit"]
    assert sorted(landed.select(key).to_pylist(), key=str) == sorted(alone.select(key).to_pylist(), key=str)


def test_batch_form_is_a_fraction_of_the_json_form() -> None:
    rows = [(SENSORS[k % 2], 1767571200 + 900 * (k // 2), 20.0 + k / 10) for k in range(500)]
    table = _table(rows)
    as_json = encode_json([{**r, "ts": r["ts"].strftime("%Y-%m-%dT%H:%M:%SZ")} for r in table.to_pylist()])
    assert len(encode_batch(table)) < len(as_json) / 3
