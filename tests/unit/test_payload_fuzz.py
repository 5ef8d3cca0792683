"""Property tests: no input knocks over the MQTT payload decoder or the meter-file parser.

Every input is either accepted or rejected with a check name and a reason (the domain's `Rejected`
rows, or a `FileMappingError`); never a bare exception. For MQTT the whole pure path a batch takes
before the Delta write is exercised (decode, Arrow table, source screening, bronze validation,
quarantine rows), with good messages on both sides of the fuzzed one: they must always land.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse.bronze import validate_readings
from lakehouse.sources.files import FileMapping, FileMappingError, file_records, parse_file_bytes
from lakehouse.sources.localtime import LocalTimeError
from lakehouse.sources.mqtt import decode_payload, records_table
from lakehouse.sources.screen import quarantine_table, screen_readings
from tests.integration.stream_fixtures import small_registry
from wattflow.settings import Settings

TOPIC = "sites/site-a/buildings/b0/sensors/main_meter"
NOW = datetime(2026, 1, 6, tzinfo=timezone.utc)
REGISTRY = small_registry(1)
SETTINGS = Settings()
FIELDS = ["building_id", "sensor_id", "metric", "ts", "value", "unit"]
DECODER_CHECKS = {"malformed_json", "payload_too_deep", "number_out_of_range", "not_a_reading"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2026-01-05T00:00:00Z", "2026-01-05 01:00", "1767571200", "energy", "main_meter", "b0", "kWh", "Wh", "NaN", ""])
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
reading_like = st.dictionaries(st.sampled_from(FIELDS + ["extra"]), json_values, max_size=7)
payload_docs = json_values | reading_like | st.lists(reading_like, max_size=4)


def _encode(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


raw_payloads = (
    st.binary(max_size=200)
    | payload_docs.map(_encode)
    | st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(min_value=4_301, max_value=6_000).map(lambda n: b'{"value": ' + b"9" * n + b"}")
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def _good(minute: int) -> bytes:
    return _encode({"metric": "energy", "ts": f"2026-01-05T00:{minute:02d}:00Z", "value": 1.0 + minute / 100, "unit": "kWh"})


def _pure_landing(payloads: list[bytes]) -> tuple[pa.Table, list[str], int]:
    """What `MqttIngest` does with one batch up to the Delta write; (bronze rows, rejected checks, records)."""
    chunks, rejected = [], []
    for payload in payloads:
        got, ids, bad = decode_payload(TOPIC, payload)
        for r in bad:
            assert r.check_name in DECODER_CHECKS and r.reason
            assert json.loads(r.raw)["topic"] == TOPIC  # the row as received: topic and payload
        rejected.extend(bad)
        if got:
            chunks.append((got, ids))
    table = records_table(chunks)
    screened = screen_readings(table, REGISTRY, now=NOW, screen=SETTINGS.screen, max_future_skew_h=24.0)
    rejected.extend(screened.rejected)
    quarantine = quarantine_table(rejected, source="mqtt:test", batch_id="b", now=NOW)
    validated = validate_readings(screened.good, REGISTRY, source="mqtt:test")
    checks = [r.check_name for r in rejected] + validated.rejected.column("check_name").to_pylist()
    assert quarantine.num_rows == len(rejected)
    assert all(quarantine.column("reason").to_pylist()) and all(validated.rejected.column("reason").to_pylist())
    return validated.good, checks, sum(len(items) for items, _ in chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_payloads)
def test_any_payload_decodes_or_is_rejected_with_a_reason(payload: bytes) -> None:
    records, ids, rejected = decode_payload(TOPIC, payload)
    assert ids == {"building_id": "b0", "sensor_id": "main_meter"}
    assert all(isinstance(r, dict) for r in records)
    for r in rejected:
        assert r.check_name in DECODER_CHECKS and len(r.reason) > 10
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        assert not records and len(rejected) == 1  # the whole payload, once
    else:
        items = doc if isinstance(doc, list) else [doc]
        assert len(records) + len(rejected) == len(items)  # every item accounted for


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_payloads)
def test_good_messages_around_any_payload_land(payload: bytes) -> None:
    good, checks, n_records = _pure_landing([_good(0), payload, _good(15)])
    landed = {(r["ts"].strftime("%H:%M"), r["value"]) for r in good.to_pylist() if r["sensor_id"] == "main_meter"}
    assert {("00:00", 1.0), ("00:15", 1.15)} <= landed
    assert good.num_rows + len(checks) >= n_records  # every record landed or rejected


@pytest.mark.parametrize(
    "payload, check",
    [
        (b"[" * 100_000 + b"]" * 100_000, "payload_too_deep"),
        (b'{"metric": "energy", "ts": "2026-01-05T00:30:00Z", "value": ' + b"7" * 5_000 + b"}", "number_out_of_range"),
        (b'{"metric": "energy", "ts": "2026-01-05T00:30:00Z", "value": {"kWh": 1}}', "not_a_reading"),
    ],
    ids=["nested-brackets", "5000-digit-number", "object-as-value"],
)
def test_the_reported_poison_payloads_are_rejected_by_name(payload: bytes, check: str) -> None:
    good, checks, _ = _pure_landing([_good(0), payload, _good(15)])
    assert checks == [check] and good.num_rows == 2


# ------------------------------------------------------------------------------------------- files

MAPPING = FileMapping(building_id="b0", timestamp_column="Time", energy_column="main_meter", energy_unit="kWh")
cells = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["2026-01-05 00:00", "2026-03-29 02:30", "2026-01-05T00:00:00+01:00", "2026-01-05T00:00Z", "05/01/2026 01:00", "1.5", "-3", "NaN", "inf", "", "1e400", '"', ",", "\n"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(r) for r in [header, *rows]).encode()


file_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _csv,
        st.lists(st.sampled_from(["Time", "main_meter", "T1", "x", ""]), min_size=1, max_size=4),
        st.lists(st.lists(cells, min_size=0, max_size=5), max_size=6),
    ),
    st.builds(_csv, st.just(["Time", "main_meter"]), st.lists(st.lists(cells, min_size=2, max_size=2), max_size=8)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file_bytes, st.sampled_from([".csv", ".zip", ".parquet"]))
def test_any_meter_file_parses_or_is_refused_with_a_reason(content: bytes, suffix: str) -> None:
    try:
        frame = parse_file_bytes(content, suffix, name=f"export{suffix}")
        records = file_records(frame, MAPPING, "Europe/Brussels", "site-a")
    except (FileMappingError, LocalTimeError) as err:
        assert len(str(err)) > 20  # a domain error with its message: the CLI prints it, no traceback
        return
    # Accepted: one reading per row and mapped column, each landing or rejected with a reason.
    assert records.readings.num_rows == len(frame)
    validated = validate_readings(records.readings, REGISTRY, source="file:test")
    assert validated.good.num_rows + validated.rejected.num_rows == len(frame)
    assert all(validated.rejected.column("reason").to_pylist())
    for value in validated.good.column("value").to_pylist():
        assert math.isfinite(value)


def test_a_good_row_beside_bad_cells_lands() -> None:
    content = _csv(["Time", "main_meter"], [["2026-01-05 00:00", "1.5"], ["not a time", "2"], ["2026-01-05 00:15", "1e400"], ["2026-01-05 00:30", "x"]])
    frame = parse_file_bytes(content, ".csv", name="export.csv")
    validated = validate_readings(file_records(frame, MAPPING, "Europe/Brussels", "site-a").readings, REGISTRY, source="file:test")
    assert validated.good.column("value").to_pylist() == [1.5]
    assert sorted(validated.rejected.column("check_name").to_pylist()) == ["non_finite_value", "non_numeric_value", "unparseable_timestamp"]
    assert isinstance(frame, pd.DataFrame)
