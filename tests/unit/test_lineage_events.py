"""OpenLineage events of the pipeline steps: what a step run writes to the file transport, and which runs
the walk back picks for a table version."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lakehouse.schemas import BUILDING_HOURLY, FEATURES, SENSOR_READINGS
from wattflow.lineage import read_events, step_run, writers
from wattflow.settings import Settings


def _raw(settings: Settings) -> list[dict]:
    return [json.loads(line) for line in settings.lineage_file.read_text().splitlines()]


def test_a_step_run_emits_start_then_complete_with_versioned_datasets(settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "curate_and_validate")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "curate")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2024-01-01")
    with step_run("curate", settings) as run:
        run.inputs.append(run.table(SENSOR_READINGS, 7))
        run.wrote_table(BUILDING_HOURLY, 3)
        run.wrote_table(FEATURES, None)  # a write that changed nothing commits no version: not an output
        run.outputs.append(run.model("building_energy_lstm", 2))
        run.details.update(start="2024-01-01T00:00:00+00:00", ge_batches=["curate-1"])
    start, complete = _raw(settings)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"] and start["inputs"] == []
    assert complete["job"] == {"namespace": "wattflow", "name": "curate", "facets": {}}
    [bronze] = complete["inputs"]
    assert bronze["namespace"] == f"delta://{settings.lakehouse_uri}" and bronze["name"] == "bronze.sensor_readings"
    assert bronze["facets"]["version"]["datasetVersion"] == "7"
    assert [(o["name"], o["facets"]["version"]["datasetVersion"]) for o in complete["outputs"]] == [
        ("silver.building_hourly", "3"), ("models:/building_energy_lstm/2", "2")]
    assert complete["outputs"][1]["namespace"] == settings.tracking_uri
    parent = complete["run"]["facets"]["parent"]
    assert parent["job"]["name"] == "curate_and_validate.curate"
    assert complete["run"]["facets"]["wattflow"]["details"]["ge_batches"] == ["curate-1"]
    [event] = read_events(settings)
    assert event.parent.startswith("curate_and_validate.curate ") and event.output("silver.building_hourly").version == "3"


def test_a_step_that_raises_emits_fail_with_the_error_and_re_raises(settings: Settings) -> None:
    with pytest.raises(ValueError, match="bad batch"):
        with step_run("ingest_sensors", settings):
            raise ValueError("bad batch")
    events = _raw(settings)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert events[1]["run"]["facets"]["errorMessage"]["message"] == "ValueError: bad batch"
    assert read_events(settings) == []  # only completed runs are lineage


def test_writers_are_the_latest_run_per_window_at_or_before_the_version(settings: Settings) -> None:
    def write(version: int, start: str, end: str) -> None:
        with step_run("curate", settings) as run:
            run.wrote_table(BUILDING_HOURLY, version)
            run.details.update(start=start, end=end)

    write(1, "2024-01-01T00:00:00+00:00", "2024-01-08T00:00:00+00:00")
    write(2, "2024-01-08T00:00:00+00:00", "2024-01-09T00:00:00+00:00")
    write(3, "2024-01-01T00:00:00+00:00", "2024-01-08T00:00:00+00:00")  # a re-run of the first week
    write(4, "2024-01-09T00:00:00+00:00", "2024-01-10T00:00:00+00:00")
    events = read_events(settings)
    name = BUILDING_HOURLY.qualified_name
    utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    # Read at version 3, the first week was last written by the re-run, the 8th by version 2; version 4 is later.
    found = writers(events, name, 3, utc("2024-01-05"), utc("2024-01-10"))
    assert [e.output(name).version for e in found] == ["3", "2"]
    # At version 2 the re-run had not happened yet; a window outside [start, end) is not a writer.
    assert [e.output(name).version for e in writers(events, name, 2, utc("2024-01-05"), utc("2024-01-08"))] == ["1"]
