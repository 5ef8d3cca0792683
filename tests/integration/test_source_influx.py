"""InfluxDB 2 source through the real influxdb-client against the local API stand-in."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
import requests
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from lakehouse.engine import get_engine
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from lakehouse.sources.influx import InfluxError, InfluxSource, forecast_lines, ingest_influx, readings_query
from tests.integration.stream_fixtures import small_registry
from tests.stand_ins.influxdb import InfluxStandIn

pytestmark = pytest.mark.integration
TOKEN = "s3cr3t-token"


@pytest.fixture
def influx():
    with InfluxStandIn(token=TOKEN, org="wattflow", buckets=["sensors", "forecasts"]) as server:
        yield server


def _seed(influx: InfluxStandIn, hours: int = 48) -> int:
    """Energy and temperature for two buildings every 15 min, written through the official client."""
    lines = []
    start = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp())
    for b in ("b0", "b1"):
        for k in range(hours * 4):
            t = start + k * 900
            lines.append(f"energy,building_id={b},sensor_id=main_meter,unit=kWh value={1.0 + (k % 96) / 10} {t}")
            lines.append(f"indoor_temperature,building_id={b},sensor_id=zone_temp value={20.5 + (k % 8) / 10} {t}")
    lines.append("co2,building_id=b0,sensor_id=unknown_sensor value=600 %d" % start)  # not in the registry
    with InfluxDBClient(url=influx.url, token=TOKEN, org="wattflow") as client:
        client.write_api(write_options=SYNCHRONOUS).write("sensors", "wattflow", lines, write_precision=WritePrecision.S)
    return len(lines)


def _body(err) -> str:
    body = err.value.body
    return body.decode() if isinstance(body, bytes) else body


def test_stand_in_rejects_what_influxdb_rejects(influx: InfluxStandIn) -> None:
    with InfluxDBClient(url=influx.url, token="wrong", org="wattflow") as client:
        with pytest.raises(ApiException) as err:
            client.query_api().query('from(bucket: "sensors") |> range(start: -1h)')
        assert err.value.status == 401 and '"unauthorized access"' in _body(err)
        with pytest.raises(ApiException) as err:
            client.write_api(write_options=SYNCHRONOUS).write("sensors", "wattflow", "m v=1")
        assert err.value.status == 401
    with InfluxDBClient(url=influx.url, token=TOKEN, org="wattflow") as client:
        with pytest.raises(ApiException) as err:
            client.query_api().query('from(bucket: "nope") |> range(start: -1h)')
        assert err.value.status == 404 and 'could not find bucket \\"nope\\"' in _body(err)
        with pytest.raises(ApiException) as err:
            client.write_api(write_options=SYNCHRONOUS).write("nope", "wattflow", "m v=1")
        assert err.value.status == 404 and 'bucket \\"nope\\" not found' in _body(err)
        with pytest.raises(ApiException) as err:
            client.write_api(write_options=SYNCHRONOUS).write("sensors", "wattflow", "m,tag=a")
        assert err.value.status == 400 and "unable to parse" in _body(err)
        with pytest.raises(ApiException) as err:
            client.query_api().query('from(bucket: "sensors")')
        assert err.value.status == 400 and "unbounded read" in _body(err)
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write("sensors", "wattflow", "m,t=x v=1.5 1700000000", write_precision=WritePrecision.S)
        with pytest.raises(ApiException) as err:
            write.write("sensors", "wattflow", 'm,t=x v="text" 1700000001', write_precision=WritePrecision.S)
        assert err.value.status == 422 and "field type conflict" in _body(err)
        # Precision: the same instant in ms lands on the same point.
        write.write("sensors", "wattflow", "m,t=x v=2.5 1700000000000", write_precision=WritePrecision.MS)
        tables = client.query_api().query('from(bucket: "sensors") |> range(start: 2023-01-01T00:00:00Z, stop: 2024-01-01T00:00:00Z) |> filter(fn: (r) => r._measurement == "m")')
        assert [(r.get_time(), r.get_value()) for t in tables for r in t.records] == [
            (datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc), 2.5)
        ]
        assert client.ping() is True
    health = requests.get(f"{influx.url}/health", timeout=5).json()
    assert health["status"] == "pass" and health["name"] == "influxdb"


def test_query_filters_range_and_pages(influx: InfluxStandIn, settings) -> None:
    _seed(influx, hours=48)
    settings.influx.page_size = 50
    flux = readings_query(settings.influx, datetime(2026, 1, 5, tzinfo=timezone.utc), datetime(2026, 1, 6, tzinfo=timezone.utc),
                          metrics=["energy"], building_ids=["b1"])
    with InfluxDBClient(url=influx.url, token=TOKEN, org="wattflow") as client:
        tables = client.query_api().query(flux)
    assert len(tables) == 1 and tables[0].records[0].values["building_id"] == "b1"
    assert len(tables[0].records) == 96  # [start, stop): 00:00 .. 23:45, the stop instant excluded
    assert tables[0].records[-1].get_time() == datetime(2026, 1, 5, 23, 45, tzinfo=timezone.utc)

    with InfluxSource(settings, url=influx.url, token=TOKEN) as source:
        pages = list(source.pages(datetime(2026, 1, 5, tzinfo=timezone.utc), datetime(2026, 1, 7, tzinfo=timezone.utc)))
    # 2 day-windows x 2 pages each: limit 50 per series, 96 readings per series and day.
    assert len(pages) == 4
    frame = pd.concat(pages)
    assert len(frame) == 2 * 2 * 192 + 1
    assert set(frame["metric"]) == {"energy", "indoor_temperature", "co2"}
    assert frame.duplicated(["building_id", "sensor_id", "ts"]).sum() == 0


def test_ingest_lands_in_bronze_and_reingest_changes_nothing(influx: InfluxStandIn, settings, wattflow_home) -> None:
    written = _seed(influx, hours=24)
    engine = get_engine()
    registry = small_registry(2)
    with InfluxSource(settings, url=influx.url, token=TOKEN) as source:
        first = ingest_influx("2026-01-05", "2026-01-06", engine=engine, registry=registry, source=source)
        assert first.rows == written and first.rows_inserted == written - 1
        assert first.landing.reasons == {"unknown_sensor": 1}
        version = engine.version(SENSOR_READINGS)
        again = ingest_influx("2026-01-05", "2026-01-06", engine=engine, registry=registry, source=source)
    assert again.rows_inserted == 0 and again.rows_updated == 0
    assert engine.version(SENSOR_READINGS) == version
    bronze = engine.read(SENSOR_READINGS).to_pandas()
    assert len(bronze) == written - 1 and set(bronze["source"]) == {"influx:sensors"}
    assert bronze.loc[bronze["sensor_id"] == "main_meter", "unit"].eq("kWh").all()
    assert engine.read(QUARANTINE_READINGS).num_rows == 1


def test_forecasts_written_back_for_grafana(influx: InfluxStandIn, settings) -> None:
    issued = datetime(2026, 1, 6, 0, tzinfo=timezone.utc)
    forecasts = pd.DataFrame(
        {
            "building_id": ["b0", "b0"], "issued_at": [issued, issued],
            "ts": [datetime(2026, 1, 6, h, tzinfo=timezone.utc) for h in (0, 1)], "horizon_h": [1, 2],
            "yhat": [3.5, 4.0], "yhat_p10": [3.0, 3.2], "yhat_p50": [3.5, 4.0], "yhat_p90": [4.1, 4.9],
            "model_name": ["building energy lstm", "building energy lstm"], "model_version": ["3", "3"],
        }
    )
    assert forecast_lines(forecasts, "energy_forecast")[0].startswith("energy_forecast,building_id=b0,model=building\\ energy\\ lstm yhat=3.5")
    with InfluxSource(settings, url=influx.url, token=TOKEN) as source:
        assert source.write_forecasts(forecasts) == 2
        with pytest.raises(InfluxError, match="404.*not found"):
            source.write_forecasts(forecasts, bucket="missing")
    with InfluxDBClient(url=influx.url, token=TOKEN, org="wattflow") as client:
        tables = client.query_api().query(
            'from(bucket: "forecasts") |> range(start: 2026-01-06T00:00:00Z, stop: 2026-01-07T00:00:00Z) '
            '|> filter(fn: (r) => r._measurement == "energy_forecast" and r._field == "p90")'
        )
    records = tables[0].records
    assert [r.get_value() for r in records] == [4.1, 4.9]
    assert records[0].values["model"] == "building energy lstm" and records[0].values["building_id"] == "b0"


def test_bad_token_is_a_clear_error(influx: InfluxStandIn, settings) -> None:
    with InfluxSource(settings, url=influx.url, token="wrong") as source:
        with pytest.raises(InfluxError, match="401: unauthorized access"):
            list(source.pages(datetime(2026, 1, 5, tzinfo=timezone.utc), datetime(2026, 1, 6, tzinfo=timezone.utc)))
