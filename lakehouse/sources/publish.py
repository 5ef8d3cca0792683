"""Replay readings onto an MQTT broker, as building gateways would send them (demos, tests, benchmarks).

A gateway publishes, per building, a JSON list of readings on ``sites/{site}/buildings/{building}/sensors``
(QoS 1). `readings_per_message` sets how many readings travel together: one building's sensors at one
timestamp is the realistic minimum; gateways that buffer send hundreds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.sources.mqtt import parse_broker, secure_client, security_options

READING_FIELDS = ("building_id", "sensor_id", "metric", "ts", "value", "unit")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    readings: int


@dataclass
class PublishResult:
    messages: int
    readings: int
    acknowledged_messages: int
    acknowledged_readings: int
    seconds: float


def reading_messages(
    readings: pa.Table, site_of: dict[str, str], *, readings_per_message: int | None = None
) -> Iterator[Message]:
    """JSON list payloads, per building in time order; by default one per building and timestamp."""
    table = readings.select([c for c in READING_FIELDS if c in readings.column_names])
    table = table.sort_by([("ts", "ascending"), ("building_id", "ascending"), ("sensor_id", "ascending")])
    ts_text = pc.strftime(table.column("ts"), format="%Y-%m-%dT%H:%M:%SZ")
    table = table.set_column(table.column_names.index("ts"), "ts", ts_text)
    for building in pc.unique(table.column("building_id")).to_pylist():
        rows = table.filter(pc.equal(table.column("building_id"), building)).to_pylist()
        topic = f"sites/{site_of.get(building, building)}/buildings/{building}/sensors"
        if readings_per_message:
            chunks = (rows[i : i + readings_per_message] for i in range(0, len(rows), readings_per_message))
        else:
            chunks = _by_timestamp(rows)
        for chunk in chunks:
            yield Message(topic, json.dumps(chunk, separators=(",", ":")).encode(), len(chunk))


def _by_timestamp(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for r in rows:
        if chunk and r["ts"] != chunk[0]["ts"]:
            yield chunk
            chunk = []
        chunk.append(r)
    if chunk:
        yield chunk


class Publisher:
    """A QoS 1 publisher that keeps publishing across broker restarts and counts broker acknowledgements."""

    def __init__(
        self, broker: str, *, client_id: str = "", max_inflight: int = 1000, security: dict[str, Any] | None = None
    ) -> None:
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_broker(broker)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        # `security`: credentials and TLS as `secure_client` takes them (`security_options(settings.mqtt)`).
        secure_client(self.client, **(security or {}))
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=4)
        self._early: set[int] = set()
        self._readings_by_mid: dict[int, int] = {}
        self._lock = threading.Lock()
        self.acknowledged_messages = 0
        self.acknowledged_readings = 0
        self.on_ack: Callable[[int], None] | None = None
        self._connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            n = self._readings_by_mid.pop(mid, None)
            if n is None:  # acknowledged before publish() returned and recorded the mid
                self._early.add(mid)
            else:
                self.acknowledged_messages += 1
                self.acknowledged_readings += n
        if self.on_ack is not None:
            self.on_ack(mid)

    def __enter__(self) -> "Publisher":
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(30):
            self.client.loop_stop()
            raise ConnectionError(f"no connection to the MQTT broker at {self.host}:{self.port}")
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, message: Message, qos: int = 1) -> int:
        # Never hold our lock across paho's publish(): paho calls on_publish under its own lock.
        info = self.client.publish(message.topic, message.payload, qos=qos)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acknowledged_messages += 1
                self.acknowledged_readings += message.readings
            else:
                self._readings_by_mid[info.mid] = message.readings
        return info.mid

    def wait_acknowledged(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._readings_by_mid:
                    return True
            time.sleep(0.05)
        return False


def publish_readings(
    readings: pa.Table,
    broker: str,
    *,
    site_of: dict[str, str],
    rate: float | None = None,
    readings_per_message: int | None = None,
    qos: int = 1,
    ack_timeout: float = 60.0,
    on_message: Callable[[Message, int], None] | None = None,
    security: dict[str, Any] | None = None,
) -> PublishResult:
    """Publish readings (the simulator's table or any bronze-shaped table) at `rate` readings/s (None: as fast as possible)."""
    start = time.monotonic()
    messages = readings_sent = 0
    with Publisher(broker, security=security) as pub:
        for msg in reading_messages(readings, site_of, readings_per_message=readings_per_message):
            mid = pub.publish(msg, qos=qos)
            messages += 1
            readings_sent += msg.readings
            if on_message is not None:
                on_message(msg, mid)
            if rate:
                ahead = readings_sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        pub.wait_acknowledged(ack_timeout)
        return PublishResult(messages, readings_sent, pub.acknowledged_messages, pub.acknowledged_readings, time.monotonic() - start)


def simulated_readings(
    *, buildings: int, start: Any, end: Any, seed: int | None = None, registry_file: Any = None
) -> tuple[pa.Table, dict[str, str]]:
    """Run the simulator, register its buildings in the registry file; its readings and each building's site."""
    from lakehouse.registry_file import load_registry, upsert_building
    from lakehouse.simulator import simulate_portfolio
    from wattflow.settings import get_settings

    settings = get_settings()
    portfolio = simulate_portfolio(
        buildings, start, end, seed=settings.simulator.seed if seed is None else seed,
        interval_minutes=settings.simulator.interval_minutes,
    )
    known = load_registry(registry_file)
    for b in portfolio.registry.buildings:
        try:
            if known.get(b.building_id) == b:
                continue
        except KeyError:
            pass
        upsert_building(b, registry_file)
    return portfolio.readings, {b.building_id: b.site_id for b in portfolio.registry.buildings}


def simulate_and_publish(
    broker: str,
    *,
    buildings: int,
    start: Any,
    end: Any,
    rate: float | None = None,
    readings_per_message: int | None = None,
    seed: int | None = None,
    registry_file: Any = None,
) -> PublishResult:
    """Run the simulator, register its buildings in the registry file, and replay its readings on MQTT."""
    from wattflow.settings import get_settings

    readings, site_of = simulated_readings(buildings=buildings, start=start, end=end, seed=seed, registry_file=registry_file)
    return publish_readings(
        readings, broker, site_of=site_of, rate=rate, readings_per_message=readings_per_message,
        security=security_options(get_settings().mqtt),
    )


def simulate_and_publish_kafka(
    *,
    buildings: int,
    start: Any,
    end: Any,
    bootstrap: str | None = None,
    topic: str | None = None,
    rate: float | None = None,
    readings_per_message: int | None = None,
    payload_format: str | None = None,
    seed: int | None = None,
    registry_file: Any = None,
):
    """Run the simulator, register its buildings, and replay its readings onto a Kafka topic keyed by building."""
    from lakehouse.sources.kafka import publish_readings_kafka
    from wattflow.settings import get_settings

    k = get_settings().kafka
    readings, _ = simulated_readings(buildings=buildings, start=start, end=end, seed=seed, registry_file=registry_file)
    return publish_readings_kafka(
        readings, bootstrap or k.bootstrap_servers, topic or k.topic, rate=rate,
        readings_per_message=readings_per_message or k.readings_per_message,
        payload_format=payload_format or k.payload_format, config=k.client_config,
    )
