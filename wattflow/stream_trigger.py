"""Event-driven ingest: readings arriving on the sensor topic trigger the ingest DAG (Airflow 3 AssetWatcher).

The ingest DAG's schedule is its cron *or* the asset ``kafka://<bootstrap>/<topic>`` (settings
`stream_trigger`), whose watcher is common-messaging's `MessageQueueTrigger` with ``scheme="kafka"``: the
Kafka provider's `AwaitMessageTrigger`, run by Airflow's triggerer. It reads the topic in its own consumer
group, hands each message to `readings_arrived`, and the first message with readings becomes an asset event
whose extra's ``payload`` is what `readings_arrived` returned: the topic position and the hours the message's
readings fall in. The run that event starts lands those hours from the configured source
(`wattflow.assets.window_from_context` reads the payload's start and end); the Kafka source drains its
consumer group, so a burst of messages is landed by one run, and runs started while one works find nothing
new (every landing is idempotent). The trigger's group only notices messages; it never lands them.

Imports nothing heavy at module level: the DAG file imports this at parse time, the triggerer imports
`readings_arrived` by its dotted path.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from wattflow.settings import Settings, get_settings

APPLY_FUNCTION = "wattflow.stream_trigger.readings_arrived"


def sensor_topic(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.stream_trigger.topic or settings.kafka.topic


def sensor_topic_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    server = settings.kafka.bootstrap_servers.split(",")[0].strip()
    return f"kafka://{server}/{sensor_topic(settings)}"


def kafka_connection(settings: Settings | None = None) -> dict[str, Any]:
    """The Airflow connection the trigger's consumer uses (the JSON form of an ``AIRFLOW_CONN_*`` variable).

    The Kafka provider passes the connection's extra to librdkafka as it is: the brokers, the trigger's own
    group, and the client settings every wattflow Kafka client uses (security, SASL) from `kafka.client_config`.
    A new trigger group starts at `stream_trigger.auto_offset_reset` ("latest": it announces what arrives from
    now on; the backlog is the ingest consumer's own group's).
    """
    settings = settings or get_settings()
    extra = {
        **settings.kafka.client_config,
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": settings.stream_trigger.group_id,
        "auto.offset.reset": settings.stream_trigger.auto_offset_reset,
    }
    return {"conn_type": "kafka", "extra": extra}


def connection_environment(settings: Settings | None = None) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` for the trigger's connection when the stream trigger is on (else nothing)."""
    settings = settings or get_settings()
    if not settings.stream_trigger.enabled:
        return {}
    key = "AIRFLOW_CONN_" + settings.stream_trigger.connection_id.upper()
    return {key: json.dumps(kafka_connection(settings))}


def sensor_stream_asset(settings: Settings | None = None) -> Any:
    """The sensor topic as an Airflow Asset watched by the Kafka message-queue trigger."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    settings = settings or get_settings()
    cfg = settings.stream_trigger
    trigger = MessageQueueTrigger(
        scheme="kafka",
        topics=[sensor_topic(settings)],
        apply_function=APPLY_FUNCTION,
        kafka_config_id=cfg.connection_id,
        poll_timeout=1,
        poll_interval=cfg.poll_interval_s,
    )
    return Asset(
        name="sensor_readings_topic",
        uri=sensor_topic_uri(settings),
        watchers=[AssetWatcher(name="sensor_readings_arrived", trigger=trigger)],
    )


def readings_arrived(message: Any) -> dict[str, Any] | None:
    """The asset event's payload for one Kafka message, or None when it holds no reading with a valid time.

    Runs in the triggerer for every message the trigger's consumer reads. Returning None keeps it reading:
    a message with nothing to land (a poison message, which the ingest consumer quarantines) starts no run.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakehouse.parsing import parse_timestamps, to_arrow_columns
    from lakehouse.sources.payload import decode_message

    value = message.value()
    if value is None:
        return None
    origin = {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
    decoded = decode_message(value, origin=origin)
    stamps = []
    if decoded.records:
        table, _ = to_arrow_columns(decoded.records)
        if "ts" in table.column_names:
            stamps.append(parse_timestamps(table.column("ts"))[0])
    if decoded.batch is not None and decoded.batch.num_rows:
        stamps.append(decoded.batch.column("ts"))
    valid = [s.cast(pa.timestamp("us", tz="UTC")) for s in stamps]
    valid = [pc.drop_null(s) for s in valid if len(s)]
    valid = [s for s in valid if len(s)]
    if not valid:
        return None
    first = min(pc.min(s).as_py() for s in valid)
    last = max(pc.max(s).as_py() for s in valid)
    hour = dt.timedelta(hours=1)
    start = first.replace(minute=0, second=0, microsecond=0)
    end = last.replace(minute=0, second=0, microsecond=0) + hour
    return {**origin, "readings": decoded.readings, "start": start.isoformat(), "end": end.isoformat()}
