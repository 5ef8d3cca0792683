"""`wattflow ingest file|mqtt|kafka|influx|weather` and `wattflow simulate publish [--kafka]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from wattflow.cli_groups import ingest_app, simulate_app

console = Console(width=None if sys.stdout.isatty() else 120)


def _landing_table(title: str, rows: list[tuple[str, object]]) -> None:
    out = Table(title=title)
    out.add_column("table")
    for h in ("received", "landed", "quarantined", "inserted", "updated", "unchanged", "version"):
        out.add_column(h, justify="right")
    for name, result in rows:
        if result is None:
            continue
        w = result.readings
        out.add_row(
            name, f"{result.received:,}", f"{result.landed:,}", f"{result.quarantined:,}",
            f"{w.rows_inserted:,}" if w else "0", f"{w.rows_updated:,}" if w else "0",
            f"{w.rows_unchanged:,}" if w else "0", str(w.version) if w else "-",
        )
    console.print(out)
    for name, result in rows:
        if result is not None and result.reasons:
            console.print(f"{name} quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(result.reasons.items())))


@ingest_app.command("file")
def ingest_file_command(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, CSV.gz, Parquet, or a .zip holding one CSV."),
    building_id: str = typer.Option(..., "--building-id", help="Building the readings belong to (added to the registry if new)."),
    timestamp_column: str = typer.Option(..., "--timestamp-column", help="Column with the reading timestamps."),
    energy_column: Optional[str] = typer.Option(None, "--energy-column", help="Column with the energy meter values."),
    energy_unit: str = typer.Option("kWh", "--energy-unit", help="Wh or kWh."),
    interval_energy: bool = typer.Option(
        True, "--interval-energy/--cumulative-energy", help="Energy per interval, or a cumulative register reading."
    ),
    timezone: Optional[str] = typer.Option(None, "--timezone", help="IANA zone of naive timestamps; default the building's."),
    clock: str = typer.Option("wall", "--clock", help="wall: timestamps follow DST; standard: standard time all year."),
    weather_column: Optional[list[str]] = typer.Option(
        None, "--weather-column", help="Repeatable FIELD=COLUMN, FIELD one of temperature_c, relative_humidity_pct, "
        "dew_point_c, wind_speed_ms, cloud_cover_pct, solar_radiation_wm2."
    ),
    sensor_column: Optional[list[str]] = typer.Option(
        None, "--sensor-column", help="Repeatable METRIC=COLUMN, e.g. indoor_temperature=T1 (sensor id from the column)."
    ),
    site_id: Optional[str] = typer.Option(None, "--site-id", help="Site for weather rows and a new building; default the building's."),
    floor_area_m2: Optional[float] = typer.Option(None, "--floor-area-m2", help="For a new building."),
    use_type: Optional[str] = typer.Option(None, "--use-type", help="For a new building (office, residential, ...)."),
    country: Optional[str] = typer.Option(None, "--country", help="For a new building; default from the timezone."),
    latitude: Optional[float] = typer.Option(None, "--latitude", min=-90, max=90, help="For a new building; default the timezone's reference city."),
    longitude: Optional[float] = typer.Option(None, "--longitude", min=-180, max=180, help="For a new building; default the timezone's reference city."),
) -> None:
    """Land a meter export in bronze: readings, sensor columns and weather columns; local times become UTC."""
    from lakehouse.registry_file import RegistryFileError
    from lakehouse.sources.files import FileMapping, FileMappingError, ingest_file, parse_assignments
    from lakehouse.sources.localtime import LocalTimeError

    if energy_unit not in ("Wh", "kWh"):
        raise typer.BadParameter(f"{energy_unit!r}: expected Wh or kWh", param_hint="--energy-unit")
    if clock not in ("wall", "standard"):
        raise typer.BadParameter(f"{clock!r}: expected wall or standard", param_hint="--clock")
    try:
        mapping = FileMapping(
            building_id=building_id,
            timestamp_column=timestamp_column,
            energy_column=energy_column,
            energy_unit=energy_unit,  # type: ignore[arg-type]
            energy_kind="interval" if interval_energy else "cumulative",
            timezone=timezone,
            clock=clock,  # type: ignore[arg-type]
            weather_columns=dict(parse_assignments(weather_column, "--weather-column")),
            sensor_columns=tuple(parse_assignments(sensor_column, "--sensor-column")),
            site_id=site_id,
        )
        result = ingest_file(path, mapping, floor_area_m2=floor_area_m2, use_type=use_type, country=country,
                             latitude=latitude, longitude=longitude)
    except (FileMappingError, LocalTimeError, RegistryFileError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{result.rows:,} rows from {path.name}: {result.first_ts} .. {result.last_ts} UTC "
        f"(timestamps in {result.timezone}, {result.clock} clock)"
    )
    _landing_table("File landed", [("bronze.sensor_readings", result.readings), ("bronze.weather", result.weather)])
    if result.registry_changed:
        console.print(f"registry: building {building_id!r} and its sensors saved to the registry file")
    if result.guessed_fields:
        console.print(f"[yellow]guessed for the new building (edit the registry file): {', '.join(result.guessed_fields)}[/yellow]")


@ingest_app.command("cambridge")
def ingest_cambridge_command(
    path: Path = typer.Argument(..., exists=True, help="The archive's zip (data/cambridge-estates/) or its unpacked 2016to2019 folder."),
    building: Optional[list[str]] = typer.Option(None, "--building", help="Repeatable building number or id (ucam-N); default all 41."),
    start: Optional[str] = typer.Option(None, "--start", help="First hour (UTC, inclusive), e.g. 2019-01-01."),
    end: Optional[str] = typer.Option(None, "--end", help="Last hour (UTC, exclusive)."),
) -> None:
    """Land the Cambridge University Estates electricity archive: 41 real buildings, hourly 2016-2019, and their weather."""
    from lakehouse.registry_file import RegistryFileError
    from lakehouse.sources.cambridge import CambridgeArchiveError, ingest_cambridge

    try:
        result = ingest_cambridge(path, buildings=building, start=start, end=end)
    except (CambridgeArchiveError, RegistryFileError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    _landing_table("Cambridge Estates landed", [("bronze.sensor_readings", result.readings), ("bronze.weather", result.weather)])
    zeros = sum(result.outage_zeros.values())
    console.print(f"{len(result.buildings)} buildings; {zeros:,} hours published as 0 (outages upstream) were not landed as readings")
    if result.registry_changed:
        console.print("registry: the archive's buildings were added to the registry file")


@ingest_app.command("mqtt")
def ingest_mqtt_command(
    broker: Optional[str] = typer.Option(None, "--broker", help="HOST:PORT; default settings.mqtt.broker."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Topic filter; default settings.mqtt.topic."),
    max_readings: Optional[int] = typer.Option(None, "--max-readings", help="Stop after this many readings."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="Stop after this many seconds without a message."),
    batch_max_readings: Optional[int] = typer.Option(None, "--batch-max-readings", help="Commit when a batch holds this many."),
    batch_max_age: Optional[float] = typer.Option(None, "--batch-max-age", help="Commit when a batch is this old (s)."),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="Fixed id of the persistent session."),
) -> None:
    """Consume sensor readings from MQTT into bronze (QoS 1, acknowledged after each Delta commit). Ctrl-C stops."""
    from lakehouse.sources.mqtt import ingest_mqtt

    try:
        stats = ingest_mqtt(
            broker=broker, topic=topic, max_readings=max_readings, idle_timeout=idle_timeout,
            batch_max_readings=batch_max_readings, batch_max_age_s=batch_max_age, client_id=client_id,
        )
    except (ConnectionError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{stats.messages:,} messages, {stats.readings:,} readings: {stats.landed:,} landed, {stats.quarantined:,} "
        f"quarantined, in {stats.batches} batches; {stats.redelivered} redelivered copies dropped; {stats.reconnects} reconnects"
    )
    if stats.reasons:
        console.print("quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.reasons.items())))


@ingest_app.command("kafka")
def ingest_kafka_command(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="HOST:PORT[,...]; default settings.kafka.bootstrap_servers."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Topic (or comma-separated topics); default settings.kafka.topic."),
    group_id: Optional[str] = typer.Option(None, "--group-id", help="Consumer group; default settings.kafka.group_id."),
    max_readings: Optional[int] = typer.Option(None, "--max-readings", help="Stop after this many readings."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="Stop after this many seconds without a message."),
    batch_max_readings: Optional[int] = typer.Option(None, "--batch-max-readings", help="Commit when a batch holds this many."),
    batch_max_age: Optional[float] = typer.Option(None, "--batch-max-age", help="Commit when a batch is this old (s)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics here; default settings.kafka.metrics_port (0: off)."),
) -> None:
    """Consume sensor readings from Kafka into bronze (a consumer group; offsets committed after each Delta commit). Ctrl-C stops."""
    from lakehouse.sources.kafka import ingest_kafka

    try:
        stats = ingest_kafka(
            bootstrap=bootstrap, topic=topic, group_id=group_id, max_readings=max_readings, idle_timeout=idle_timeout,
            batch_max_readings=batch_max_readings, batch_max_age_s=batch_max_age, metrics_port=metrics_port,
        )
    except (ConnectionError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{stats.messages:,} messages, {stats.readings:,} readings: {stats.landed:,} landed, {stats.quarantined:,} "
        f"quarantined, in {stats.batches} batches; {stats.rebalances} rebalances"
    )
    if stats.reasons:
        console.print("quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.reasons.items())))


@ingest_app.command("influx")
def ingest_influx_command(
    start: str = typer.Option(..., "--start", help="Window start (UTC, inclusive), e.g. 2024-01-01."),
    stop: str = typer.Option(..., "--stop", help="Window stop (UTC, exclusive)."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Repeatable; default every metric."),
    building_id: Optional[list[str]] = typer.Option(None, "--building-id", help="Repeatable; default every building."),
) -> None:
    """Pull readings for [start, stop) from InfluxDB 2 (settings.influx) into bronze, in pages."""
    from lakehouse.sources.influx import InfluxError, ingest_influx

    try:
        result = ingest_influx(start, stop, metrics=metric, building_ids=building_id)
    except InfluxError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{result.pages} page(s), {result.rows:,} rows; {result.rows_inserted:,} inserted, {result.rows_updated:,} updated")
    _landing_table("InfluxDB landed", [("bronze.sensor_readings", result.landing)])


@ingest_app.command("weather")
def ingest_weather_command(
    site_id: str = typer.Option(..., "--site-id", help="Site in the registry (its first building's location is used)."),
    start: Optional[str] = typer.Option(None, "--start", help="Observations from (UTC, inclusive)."),
    end: Optional[str] = typer.Option(None, "--end", help="Observations to (UTC, exclusive)."),
    forecast: bool = typer.Option(False, "--forecast", help="Land the current forecast instead, stamped with its issue hour."),
    historical_forecast: bool = typer.Option(
        False, "--historical-forecast", help="Land the day-ahead forecasts issued for the hours in [start, end) "
        "(Open-Meteo Previous Runs API) instead of observations: real forecasts for backtests."
    ),
) -> None:
    """Land Open-Meteo weather for a site: archive observations for [start, end), the forecasts issued for
    those hours (--historical-forecast), or the current forecast (--forecast)."""
    import pandas as pd

    from lakehouse.sources.weather import WeatherRequestError, WeatherServiceUnavailable, ingest_weather

    if forecast and historical_forecast:
        raise typer.BadParameter("pass one of --forecast (the current forecast) or --historical-forecast (past forecasts)")
    if not forecast and (start is None or end is None):
        what = "historical forecasts" if historical_forecast else "observations"
        raise typer.BadParameter(f"{what} need --start and --end (or pass --forecast for the current forecast)")
    for name, value in (("--start", start), ("--end", end)):
        if value is not None:
            try:
                pd.Timestamp(value)
            except ValueError:
                raise typer.BadParameter(f"{value!r} is not a date or time; use e.g. 2024-01-01 or 2024-01-01T06:00",
                                         param_hint=name) from None
    try:
        result = ingest_weather(site_id, start, end, forecast=forecast, historical_forecast=historical_forecast)
    except (KeyError, ValueError, WeatherRequestError, WeatherServiceUnavailable) as err:
        console.print(f"[red]{err.args[0] if err.args else err}[/red]")
        raise typer.Exit(1) from None
    _landing_table("Weather landed", [("bronze.weather", result)])


@simulate_app.command("publish")
def simulate_publish(
    broker: Optional[str] = typer.Option(None, "--broker", help="HOST:PORT; default settings.mqtt.broker (with --kafka: settings.kafka.bootstrap_servers)."),
    buildings: int = typer.Option(3, "--buildings", "-n", min=1),
    start: str = typer.Option(..., "--start", help="First day (UTC, inclusive)."),
    end: str = typer.Option(..., "--end", help="Last day (UTC, exclusive)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Readings per second; default as fast as the broker takes them."),
    readings_per_message: Optional[int] = typer.Option(
        None, "--readings-per-message", help="Pack this many readings per message; default one building's sensors per timestamp."
    ),
    seed: Optional[int] = typer.Option(None, "--seed"),
    kafka: bool = typer.Option(False, "--kafka", help="Publish onto Kafka (settings.kafka.topic, keyed by building) instead of MQTT."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Kafka topic; default settings.kafka.topic."),
    payload_format: Optional[str] = typer.Option(
        None, "--payload-format", help="Kafka payloads: batch (compact, many readings a message) or json; default settings.kafka.payload_format."
    ),
) -> None:
    """Simulate a portfolio, add its buildings to the registry file, and publish its readings on MQTT (QoS 1) or Kafka (acks=all)."""
    from lakehouse.sources.publish import simulate_and_publish
    from wattflow.settings import get_settings

    if kafka:
        from lakehouse.sources.publish import simulate_and_publish_kafka

        if payload_format not in (None, "batch", "json"):
            raise typer.BadParameter(f"{payload_format!r}: expected batch or json", param_hint="--payload-format")
        try:
            sent = simulate_and_publish_kafka(
                buildings=buildings, start=start, end=end, bootstrap=broker, topic=topic, rate=rate,
                readings_per_message=readings_per_message, payload_format=payload_format, seed=seed,
            )
        except Exception as err:  # KafkaException: one line, not a traceback
            console.print(f"[red]Kafka: {err}[/red]")
            raise typer.Exit(1) from None
        console.print(
            f"published {sent.readings:,} readings in {sent.messages:,} messages in {sent.seconds:.1f} s "
            f"({sent.readings / max(sent.seconds, 1e-9):,.0f} readings/s); broker acknowledged {sent.acknowledged_readings:,}"
        )
        if sent.acknowledged_readings != sent.readings:
            console.print(f"[red]{sent.readings - sent.acknowledged_readings:,} readings were not acknowledged[/red]")
            raise typer.Exit(1)
        return
    try:
        result = simulate_and_publish(
            broker or get_settings().mqtt.broker, buildings=buildings, start=start, end=end, rate=rate,
            readings_per_message=readings_per_message, seed=seed,
        )
    except ConnectionError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"published {result.readings:,} readings in {result.messages:,} messages in {result.seconds:.1f} s "
        f"({result.readings / max(result.seconds, 1e-9):,.0f} readings/s); broker acknowledged {result.acknowledged_readings:,}"
    )


@ingest_app.command("bacnet")
def ingest_bacnet_command(
    sink: Optional[str] = typer.Option(None, "--sink", help="bronze (land directly), kafka or mqtt; default settings.bacnet.sink."),
    interval: Optional[float] = typer.Option(None, "--interval", min=0.01, help="Seconds between polls; default settings.bacnet.poll_interval_s."),
    polls: Optional[int] = typer.Option(None, "--polls", min=1, help="Stop after this many polls."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    building_id: Optional[list[str]] = typer.Option(None, "--building-id", help="Repeatable; default every building with BACnet points."),
    broker: Optional[str] = typer.Option(None, "--broker", help="MQTT HOST:PORT (--sink mqtt) or Kafka bootstrap servers (--sink kafka); default from settings."),
) -> None:
    """Poll the registry's BACnet/IP points (ReadPropertyMultiple, units checked) into bronze, onto Kafka or MQTT. Ctrl-C stops."""
    from lakehouse.registry_file import RegistryFileError
    from lakehouse.sources.bacnet import BacnetConfigError, ingest_bacnet

    try:
        summary = ingest_bacnet(sink=sink, polls=polls, duration_s=duration, interval_s=interval, buildings=building_id,
                                broker=broker)
    except (BacnetConfigError, RegistryFileError, ConnectionError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    devices = Table(title="BACnet devices")
    for h in ("device", "points", "polls", "answered", "failed", "state", "last error"):
        devices.add_column(h, justify="right" if h in ("points", "polls", "answered", "failed") else "left")
    for d in summary.devices:
        state = "up" if d.up else ("DOWN" if d.up is False else "not polled")
        devices.add_row(d.name, str(d.points), str(d.polls), str(d.answered), str(d.failed), state, d.last_error)
    console.print(devices)
    console.print(
        f"{summary.polls} polls, {summary.readings:,} readings read, {summary.sent:,} sent: {summary.landed:,} landed, "
        f"{summary.quarantined:,} quarantined"
    )
    if summary.reasons:
        console.print("quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(summary.reasons.items())))
    for problem in summary.problems.values():
        console.print(f"[yellow]{problem.message}[/yellow]")


@ingest_app.command("kafka-stream")
def ingest_kafka_stream_command(
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers; default settings.kafka.bootstrap_servers."),
    topic: Optional[str] = typer.Option(None, "--topic", help="Comma-separated topics; default settings.kafka.topic."),
    available_now: bool = typer.Option(False, "--available-now", help="Land what the topic holds, then stop."),
    max_offsets_per_trigger: Optional[int] = typer.Option(None, "--max-offsets-per-trigger", min=1, help="Kafka records per micro-batch."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds."),
) -> None:
    """Kafka into bronze with Spark Structured Streaming (the cluster runner): foreachBatch MERGE, checkpoint under WATTFLOW_HOME."""
    from lakehouse.streaming import stream_kafka_to_bronze

    topics = [t.strip() for t in topic.split(",") if t.strip()] if topic else None
    try:
        stats = stream_kafka_to_bronze(bootstrap=bootstrap, topics=topics, available_now=available_now,
                                       max_offsets_per_trigger=max_offsets_per_trigger, timeout_s=timeout)
    except RuntimeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{stats.batches} batches, {stats.records:,} records, {stats.readings:,} readings: {stats.landed:,} landed, "
                  f"{stats.quarantined:,} quarantined")
    if stats.reasons:
        console.print("quarantine reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.reasons.items())))
