"""Open-Meteo client against a local HTTP server serving responses in the API's shape."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from lakehouse.engine import get_engine
from lakehouse.schemas import WEATHER
from lakehouse.sources.weather import (
    Location,
    OpenMeteoClient,
    WeatherRequestError,
    WeatherServiceUnavailable,
    hourly_frame,
    ingest_weather,
)
from tests.integration.stream_fixtures import small_registry

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "open_meteo"
ARCHIVE = json.loads((FIXTURES / "archive_brussels_2024-01-01_2024-01-03.json").read_text())
FORECAST = json.loads((FIXTURES / "forecast_brussels_2026-11-26.json").read_text())
# Constructed from the Previous Runs API's documented shape, not captured (see the fixtures' README).
PREVIOUS_RUNS = json.loads((FIXTURES / "previous_runs_brussels_2024-01-01_2024-01-03.json").read_text())


@pytest.fixture
def client(httpserver: HTTPServer, settings, monkeypatch) -> OpenMeteoClient:
    monkeypatch.setattr(settings.weather, "archive_url", httpserver.url_for("/v1/archive"))
    monkeypatch.setattr(settings.weather, "forecast_url", httpserver.url_for("/v1/forecast"))
    monkeypatch.setattr(settings.weather, "previous_runs_url", httpserver.url_for("/previous-runs/v1/forecast"))
    monkeypatch.setattr(settings.weather, "backoff_initial_s", 0.0)
    monkeypatch.setattr(settings.weather, "max_retries", 2)
    return OpenMeteoClient(settings)


def test_hourly_frame_maps_names_and_converts_kmh() -> None:
    body = json.loads(json.dumps(ARCHIVE))
    body["hourly_units"]["wind_speed_10m"] = "km/h"
    frame = hourly_frame(body)
    assert list(frame.columns[:3]) == ["ts", "temperature_c", "relative_humidity_pct"]
    assert frame["ts"].iloc[0] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert frame["wind_speed_ms"].iloc[0] == pytest.approx(ARCHIVE["hourly"]["wind_speed_10m"][0] / 3.6)
    assert frame["temperature_c"].isna().sum() == 1  # the archive's null stays missing


def test_archive_lands_observations_with_retry_and_cache(client: OpenMeteoClient, httpserver: HTTPServer, settings) -> None:
    # First call: 503 (transient), then the real response. Both are ordered; a third request would fail.
    httpserver.expect_ordered_request("/v1/archive").respond_with_response(Response("upstream overloaded", status=503))
    httpserver.expect_ordered_request("/v1/archive").respond_with_json(ARCHIVE)
    registry = small_registry(1)
    engine = get_engine()
    result = ingest_weather("site-a", "2024-01-01", "2024-01-04", registry=registry, client=client, engine=engine)
    assert client.requests_made == 2
    sent = httpserver.log[-1][0].args
    assert (sent["start_date"], sent["end_date"], sent["wind_speed_unit"], sent["timezone"]) == ("2024-01-01", "2024-01-03", "ms", "GMT")
    assert sent["hourly"].split(",") == ["temperature_2m", "relative_humidity_2m", "dew_point_2m", "wind_speed_10m", "cloud_cover", "shortwave_radiation"]
    assert result.landed == 72 and result.quarantined == 0
    rows = engine.read(WEATHER).to_pandas().sort_values("ts")
    assert set(rows["kind"]) == {"observation"} and (rows["issued_at"] == rows["ts"]).all()
    assert rows["temperature_c"].iloc[0] == ARCHIVE["hourly"]["temperature_2m"][0]
    assert rows["solar_radiation_wm2"].max() == max(ARCHIVE["hourly"]["shortwave_radiation"])

    # Cache hit: no request (the server would answer "no handler"), and nothing changes in bronze.
    version = engine.version(WEATHER)
    again = ingest_weather("site-a", "2024-01-01", "2024-01-04", registry=registry, client=client, engine=engine)
    assert client.requests_made == 2
    assert again.readings.rows_inserted == 0 and again.readings.rows_updated == 0
    assert engine.version(WEATHER) == version
    httpserver.check_assertions()


def test_archive_window_is_half_open(client: OpenMeteoClient, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/archive").respond_with_json(ARCHIVE)
    frame = client.archive(Location("site-a", 50.86, 4.36), datetime(2024, 1, 1, 6), datetime(2024, 1, 2, 6))
    assert len(frame) == 24 and frame["ts"].min().hour == 6


def test_forecast_records_issue_hour(client: OpenMeteoClient, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/forecast").respond_with_json(FORECAST)
    now = datetime(2026, 11, 26, 8, 41, tzinfo=timezone.utc)
    engine = get_engine()
    result = ingest_weather("site-a", forecast=True, registry=small_registry(1), client=client, engine=engine, now=now)
    rows = engine.read(WEATHER).to_pandas()
    assert set(rows["kind"]) == {"forecast"}
    assert set(rows["issued_at"]) == {datetime(2026, 11, 26, 8, tzinfo=timezone.utc)}
    assert rows["ts"].min() == datetime(2026, 11, 26, 8, tzinfo=timezone.utc)  # no hours before the issue
    assert result.landed == 7 * 24 - 8
    assert httpserver.log[0][0].args["forecast_days"] == "7"
    # Same issue hour: served from cache.
    ingest_weather("site-a", forecast=True, registry=small_registry(1), client=client, engine=engine, now=now.replace(minute=59))
    assert client.requests_made == 1


def test_request_errors_and_exhausted_retries(client: OpenMeteoClient, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/archive").respond_with_json(
        {"error": True, "reason": "Parameter 'start_date' is out of allowed range"}, status=400
    )
    with pytest.raises(WeatherRequestError, match="out of allowed range"):
        client.archive(Location("s", 1.0, 2.0), datetime(1900, 1, 1), datetime(1900, 1, 2))
    httpserver.clear()
    httpserver.expect_request("/v1/forecast").respond_with_data("bad gateway", status=502)
    with pytest.raises(WeatherServiceUnavailable, match="3 times"):
        client.forecast(Location("s", 1.0, 2.0), now=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_previous_runs_land_day_ahead_forecasts_issued_before_every_origin(client: OpenMeteoClient, httpserver: HTTPServer, settings) -> None:
    import pandas as pd

    from lakehouse.silver import attach_weather

    httpserver.expect_ordered_request("/previous-runs/v1/forecast").respond_with_json(PREVIOUS_RUNS)
    registry = small_registry(1)
    engine = get_engine()
    result = ingest_weather("site-a", "2024-01-01", "2024-01-04", historical_forecast=True, registry=registry,
                            client=client, engine=engine)
    sent = httpserver.log[-1][0].args
    assert (sent["start_date"], sent["end_date"], sent["timezone"], sent["wind_speed_unit"]) == ("2024-01-01", "2024-01-03", "GMT", "ms")
    assert sent["hourly"].split(",")[:2] == ["temperature_2m_previous_day1", "relative_humidity_2m_previous_day1"]
    assert {v.rsplit("_previous_day", 1)[1] for v in sent["hourly"].split(",")} == {"1", "2"}
    # Day 1 for all 72 hours, day 2 for the 66 it covers (null for the first six: left out).
    assert result.landed == 72 + 66 and result.quarantined == 0
    rows = engine.read(WEATHER).to_pandas()
    assert set(rows["kind"]) == {"forecast"} and set(rows["source"]) == {"open-meteo:previous-runs"}
    lead = (rows["ts"] - rows["issued_at"]) / pd.Timedelta(hours=1)
    published = settings.weather.previous_runs_published_after_h
    assert set(lead) == {24 - published, 48 - published}  # the latest possible run start + its publication time
    day1 = rows[lead == 24 - published].set_index("ts").sort_index()
    assert list(day1["temperature_c"]) == PREVIOUS_RUNS["hourly"]["temperature_2m_previous_day1"]

    # Silver's join: every hour of the window gets a forecast issued strictly before its day-ahead origin
    # (local midnight, Brussels): day 1 where its run was out by then (local hours 0-15 in winter), else day 2.
    ts = pd.date_range("2024-01-01", periods=72, freq="h", tz="UTC")
    got = attach_weather(pd.DataFrame({"building_id": "b0", "ts": ts}), registry, None, rows, derive_observed=False)
    assert got["forecast_issued_at"].notna().all() and (got["forecast_issued_at"] < got["forecast_origin"]).all()
    local_hour = ts.tz_convert("Europe/Brussels").hour.to_numpy()
    day2 = rows[lead == 48 - published].set_index("ts")["temperature_c"]
    expected = [day1.loc[t, "temperature_c"] if h < 24 - published else day2.loc[t] for t, h in zip(ts, local_hour)]
    assert got["forecast_temperature_c"].tolist() == expected
    assert (local_hour >= 24 - published).sum() > 0 and (local_hour < 24 - published).sum() > 0  # both leads used

    # A past window is final: the re-run is served from cache and changes nothing.
    version = engine.version(WEATHER)
    again = ingest_weather("site-a", "2024-01-01", "2024-01-04", historical_forecast=True, registry=registry,
                           client=client, engine=engine)
    assert client.requests_made == 1 and again.readings.rows_inserted == 0 and engine.version(WEATHER) == version


def test_weather_cli_historical_forecast_options(wattflow_home) -> None:
    from typer.testing import CliRunner

    from wattflow.cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["ingest", "weather", "--site-id", "s", "--forecast", "--historical-forecast"])
    assert both.exit_code == 2 and "--historical-forecast" in both.output and "Traceback" not in both.output
    no_window = runner.invoke(app, ["ingest", "weather", "--site-id", "s", "--historical-forecast"])
    assert no_window.exit_code == 2 and "historical forecasts need --start and --end" in no_window.output
    bad_date = runner.invoke(app, ["ingest", "weather", "--site-id", "s", "--historical-forecast", "--start", "soon", "--end", "2024-01-02"])
    assert bad_date.exit_code == 2 and "'soon' is not a date" in bad_date.output and "--start" in bad_date.output
