"""The upsert core shared by both engines: conform, de-duplicate, diff."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.engine import SchemaMismatch, conform, dedupe_last, diff_against
from lakehouse.schemas import SENSOR_READINGS

T0 = dt.datetime(2024, 3, 30, 23, 0, tzinfo=dt.timezone.utc)


def readings(values: list[float], start: dt.datetime = T0, building: str = "b1", batch: str = "batch-1") -> pa.Table:
    n = len(values)
    return pa.table(
        {
            "building_id": [building] * n,
            "sensor_id": ["meter"] * n,
            "metric": ["energy"] * n,
            "ts": pa.array([start + dt.timedelta(minutes=15 * i) for i in range(n)], pa.timestamp("us", tz="UTC")),
            "value": values,
            "unit": ["kWh"] * n,
            "source": ["test"] * n,
            "batch_id": [batch] * n,
            "ingested_at": pa.array([dt.datetime.now(dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def test_conform_derives_utc_date_partition() -> None:
    table = conform(SENSOR_READINGS, readings([1.0] * 8))
    assert table.schema == SENSOR_READINGS.schema
    # 23:00 UTC on 30 March plus 4 readings crosses midnight UTC: two dates.
    assert [d.isoformat() for d in table.column("date").to_pylist()][::4] == ["2024-03-30", "2024-03-31"]


def test_conform_names_the_missing_column() -> None:
    with pytest.raises(SchemaMismatch, match="unit"):
        conform(SENSOR_READINGS, readings([1.0]).drop(["unit"]))


def test_dedupe_keeps_last_reading_per_key() -> None:
    batch = conform(SENSOR_READINGS, pa.concat_tables([readings([1.0, 2.0, 3.0]), readings([9.0, 8.0])]))
    result = dedupe_last(SENSOR_READINGS, batch)
    assert result.column("value").to_pylist() == [3.0, 9.0, 8.0] or sorted(result.column("value").to_pylist()) == [3.0, 8.0, 9.0]
    assert result.num_rows == 3
    assert dict(zip(result.column("ts").to_pylist(), result.column("value").to_pylist()))[T0] == 9.0


def test_diff_splits_new_changed_unchanged_ignoring_bookkeeping() -> None:
    existing = conform(SENSOR_READINGS, readings([1.0, 2.0, 3.0], batch="old"))
    batch = conform(SENSOR_READINGS, readings([1.0, 2.5, 3.0, 4.0], batch="new"))
    delta = diff_against(SENSOR_READINGS, batch, existing)
    assert delta.unchanged == 2
    assert delta.updates.column("value").to_pylist() == [2.5]
    assert delta.inserts.column("value").to_pylist() == [4.0]


def test_delta_rs_upsert_is_idempotent_and_merges_overlaps(tmp_path) -> None:
    engine = DeltaRsEngine(str(tmp_path))
    first = engine.upsert(SENSOR_READINGS, readings([float(i) for i in range(96)]))
    assert (first.version, first.rows_inserted) == (0, 96)
    again = engine.upsert(SENSOR_READINGS, readings([float(i) for i in range(96)], batch="rerun"))
    assert (again.version, again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 0, 96)
    before = engine.read(SENSOR_READINGS).sort_by([("ts", "ascending")])
    # An overlapping interval: 48 known readings (one corrected) and 48 new ones.
    overlap = [float(i) for i in range(48, 144)]
    overlap[0] = -1.0
    merged = engine.upsert(SENSOR_READINGS, readings(overlap, start=T0, building="b1").slice(0, 0))
    assert merged.version == 0
    shifted = readings(overlap, start=T0 + dt.timedelta(hours=12))
    merged = engine.upsert(SENSOR_READINGS, shifted)
    assert (merged.version, merged.rows_inserted, merged.rows_updated, merged.rows_unchanged) == (1, 48, 1, 47)
    after = engine.read(SENSOR_READINGS).sort_by([("ts", "ascending")])
    assert after.num_rows == 144
    assert after.column("value").to_pylist()[48] == -1.0
    assert before.num_rows == 96
    # Reads pin a version.
    assert engine.read(SENSOR_READINGS, version=0).num_rows == 96


def test_delta_rs_reads_filter_on_any_column_after_a_merge(tmp_path) -> None:
    """Files written by delta-rs's MERGE hold strings as string_view: a filter on a non-partition string
    column must still select (it failed with "greater_equal has no kernel (string, string_view)")."""
    import pandas as pd
    import pyarrow.parquet as pq

    from lakehouse.schemas import FEATURES
    from ml.synthetic import synthetic_gold_features

    engine = DeltaRsEngine(str(tmp_path))
    frame = synthetic_gold_features(building_ids=("b01", "b02"), days=10)
    for column in FEATURES.schema.names:
        if column not in frame:
            frame[column] = None
    frame["date"] = pd.to_datetime(frame["ts"], utc=True).dt.date

    def upsert(part: pd.DataFrame) -> None:
        engine.upsert(FEATURES, pa.Table.from_pandas(part[FEATURES.schema.names], schema=FEATURES.schema, preserve_index=False))

    upsert(frame[frame["ts"] < frame["ts"].min() + pd.Timedelta(days=5)])
    upsert(frame.assign(energy_kwh=frame["energy_kwh"] + 1.0))  # updates and inserts: a MERGE
    files = engine._table(FEATURES, None).file_uris()
    assert any(pq.read_schema(f).field("building_id").type == pa.string_view() for f in files)
    b01 = engine.read(FEATURES, filters=[("building_id", "in", ["b01"])])
    assert b01.num_rows == 240 and set(b01.column("building_id").to_pylist()) == {"b01"}
    window = engine.read(FEATURES, filters=[("building_id", "=", "b02"), ("date", ">=", "2024-01-06")], columns=["energy_kwh"])
    assert window.column_names == ["energy_kwh"] and window.num_rows == 5 * 24
    assert engine.read(FEATURES, filters=[("building_id", "not in", ["b01"]), ("energy_kwh", ">", -1e9)]).num_rows == 240


def test_delta_rs_diff_reads_only_the_batch_buildings_files(tmp_path) -> None:
    """A portfolio lands a chunk of buildings at a time over the same dates: the upsert's diff must read the
    files of the batch's buildings, not whole date partitions (quadratic in the portfolio otherwise), and
    still find every existing key of those buildings, in files delta-rs wrote as string or string_view."""
    engine = DeltaRsEngine(str(tmp_path))
    first = engine.upsert(SENSOR_READINGS, readings([1.0] * 96, building="b1"))  # create: plain strings
    engine.upsert(SENSOR_READINGS, readings([2.0] * 96, building="b2"))  # MERGE: string_view files
    engine.upsert(SENSOR_READINGS, readings([3.0] * 96, building="b3"))
    table = engine._table(SENSOR_READINGS)
    columns = [*SENSOR_READINGS.keys, "value"]
    batch = conform(SENSOR_READINGS, readings([9.0] * 96, building="b2"))
    existing = DeltaRsEngine._existing_for(table, SENSOR_READINGS, batch, columns)
    assert set(existing.column("building_id").to_pylist()) == {"b2"}
    assert existing.num_rows == 96 and set(existing.column("value").to_pylist()) == {2.0}
    # The upsert built on it: b2's 96 rows updated, the others untouched, a re-run a no-op.
    changed = engine.upsert(SENSOR_READINGS, readings([9.0] * 96, building="b2"))
    assert (changed.rows_inserted, changed.rows_updated) == (0, 96)
    again = engine.upsert(SENSOR_READINGS, readings([9.0] * 96, building="b2"))
    assert (again.version, again.rows_unchanged) == (changed.version, 96)
    rows = engine.read(SENSOR_READINGS, columns=["building_id", "value"]).to_pydict()
    assert sorted(set(zip(rows["building_id"], rows["value"]))) == [("b1", 1.0), ("b2", 9.0), ("b3", 3.0)]
    assert first.version == 0


@pytest.fixture(scope="module")
def three_buildings(tmp_path_factory) -> DeltaRsEngine:
    """b1 by a create (plain strings), b2 and b3 by MERGEs (string_view files), over two dates."""
    engine = DeltaRsEngine(str(tmp_path_factory.mktemp("lake")))
    for value, building in ((1.0, "b1"), (2.0, "b2"), (3.0, "b3")):
        engine.upsert(SENSOR_READINGS, readings([value] * 96, building=building))
    return engine


_BUILDINGS = st.lists(st.sampled_from(["b0", "b1", "b2", "b3", "b4"]), min_size=1, max_size=3)
_TIMES = st.integers(min_value=-8, max_value=104).map(lambda i: T0 + dt.timedelta(minutes=15 * i))
_FILTER = st.one_of(
    st.tuples(st.just("building_id"), st.sampled_from(["in", "not in"]), _BUILDINGS),
    st.tuples(st.just("building_id"), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), st.sampled_from(["b0", "b1", "b2", "b3", "b4"])),
    st.tuples(st.just("ts"), st.sampled_from(["=", "<", "<=", ">", ">="]), _TIMES),
    st.tuples(st.just("date"), st.sampled_from(["=", "!=", "<", ">=", "in", "not in"]), st.sampled_from(["2024-03-30", "2024-03-31", "2024-04-01"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filters=st.lists(_FILTER, min_size=1, max_size=3))
def test_delta_rs_filtered_read_equals_filtering_the_whole_table(three_buildings, filters) -> None:
    """Files are chosen by partition value and min/max statistics before any is opened; whatever the
    filters, the rows read are exactly the rows of the whole table that pass them."""
    filters = [(c, op, [v] if op in ("in", "not in") and isinstance(v, str) else v) for c, op, v in filters]
    everything = three_buildings.read(SENSOR_READINGS).to_pylist()

    def passes(row: dict, column: str, op: str, value) -> bool:
        have = row[column]
        if column == "date":
            value = [dt.date.fromisoformat(v) for v in value] if isinstance(value, list) else dt.date.fromisoformat(value)
        return {"in": lambda: have in value, "not in": lambda: have not in value, "=": lambda: have == value,
                "!=": lambda: have != value, "<": lambda: have < value, "<=": lambda: have <= value,
                ">": lambda: have > value, ">=": lambda: have >= value}[op]()

    expected = sorted((r["building_id"], r["ts"]) for r in everything if all(passes(r, *f) for f in filters))
    got = three_buildings.read(SENSOR_READINGS, filters=filters, columns=["building_id", "ts"]).to_pylist()
    assert sorted((r["building_id"], r["ts"]) for r in got) == expected


def test_delta_rs_refuses_a_table_with_deletion_vectors_rather_than_return_deleted_rows(tmp_path) -> None:
    """The reader opens the chosen Parquet files itself; a deletion vector would be ignored, so it refuses."""
    from deltalake import write_deltalake

    engine = DeltaRsEngine(str(tmp_path))
    batch = conform(SENSOR_READINGS, readings([1.0] * 4))
    write_deltalake(engine.table_uri(SENSOR_READINGS), batch, partition_by=list(SENSOR_READINGS.partition_by),
                    configuration={"delta.enableDeletionVectors": "true"})
    with pytest.raises(ValueError, match=r"deletionVectors.*lakehouse.engine=spark"):
        engine.read(SENSOR_READINGS, filters=[("building_id", "=", "b1")])
