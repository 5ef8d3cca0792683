"""BACnet/IP building management systems into the stream: poll each device with ReadPropertyMultiple.

The registry says where each sensor lives in the BMS (`lakehouse.buildings.BacnetPoint`: the device's
address and instance, the object such as ``analog-input,3``, the property, ``present-value`` unless said).
Every `poll_interval_s` the poller sends each device one ReadPropertyMultiple per
`max_objects_per_request` objects, asking for the property and the object's ``units``; devices are read
concurrently, so one slow device does not delay the others' readings.

Units are checked on every poll, not once: a BMS integrator can re-commission an object while we run.
BACnet's unit name is mapped to ours (``kilowatt-hours`` -> ``kWh``, ``degrees-fahrenheit`` -> ``degF``) and
the reading is sent with it, so the one screen every source shares (`lakehouse.sources.screen`) converts
what converts (Wh to kWh, degF to degC) and quarantines what does not, with the field and the value. The
poller names the remedy in its log and summary (`PointProblem`): a unit that does not fit is never landed
silently, whatever the sink.

A reading is stamped with the start of the interval slot it was read in: a poller restarted within a slot
re-reads the same key (bronze upserts it) instead of adding an off-grid reading, and silver sees regular
timestamps. A BACnet REAL is single precision, so a value lands as the shortest decimal that reads back
as the same float32 (21.3, not 21.299999237060547).

A device that stops answering (no reply within the APDU timeout and retries, or an error for the whole
request) is reported: a warning when it goes down and when it comes back, the Prometheus gauge
``wattflow_bacnet_device_up``, and the summary's per-device table. The other devices go on being read.

Sinks: ``bronze`` lands each poll through `land_source_readings` (screen, calibration, quarantine);
``kafka`` publishes each poll onto the sensor topic in the shared payload format, keyed by building, for
`wattflow ingest kafka` (or the Structured Streaming query) to land; ``mqtt`` publishes it the way a
building gateway does (`lakehouse.sources.publish`), for `wattflow ingest mqtt`.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import pyarrow as pa

from lakehouse.buildings import BuildingRegistry
from lakehouse.sources.screen import UNIT_CONVERSIONS
from wattflow.log import get_logger

log = get_logger(__name__)

# BACnet engineering units (their names in bacpypes3) -> the registry's unit vocabulary.
BACNET_UNITS: dict[str, str] = {
    "kilowatt-hours": "kWh",
    "watt-hours": "Wh",
    "megawatt-hours": "MWh",
    "degrees-celsius": "degC",
    "degrees-fahrenheit": "degF",
    "degrees-kelvin": "K",
    "percent-relative-humidity": "%",
    "percent": "%",
    "parts-per-million": "ppm",
}
# BACnet has no unit for a head count: people counters report "no-units", which fits only a count.
COUNT_UNITS = frozenset({"people"})
DEFAULT_PORT = 47808


class BacnetConfigError(ValueError):
    """The registry maps no sensor to BACnet, or the poller's own address cannot be used."""


@dataclass(frozen=True)
class Point:
    """One sensor's BACnet object, with what the registry says its readings are."""

    building_id: str
    sensor_id: str
    metric: str
    unit: str  # the sensor's unit
    address: str  # host:port
    device_instance: int | None
    object: str  # "analog-input,3"
    property: str  # "present-value"

    @property
    def device(self) -> str:
        return device_name(self.address, self.device_instance)


def device_name(address: str, device_instance: int | None) -> str:
    return f"device {device_instance} at {address}" if device_instance is not None else f"device at {address}"


def normalise_address(address: str) -> str:
    """``host`` -> ``host:47808`` (BACnet/IP's port), so two spellings of one device are one device."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit():
        return f"{address.strip()}:{DEFAULT_PORT}"
    return f"{host}:{int(port)}"


def registry_points(registry: BuildingRegistry, buildings: Iterable[str] | None = None) -> list[Point]:
    """The sensors the registry maps to BACnet objects (optionally only some buildings')."""
    wanted = set(buildings) if buildings else None
    out = []
    for b in registry.buildings:
        if wanted is not None and b.building_id not in wanted:
            continue
        for s in b.sensors:
            if s.bacnet is None:
                continue
            out.append(
                Point(b.building_id, s.sensor_id, s.metric, s.unit, normalise_address(s.bacnet.address),
                      s.bacnet.device_instance, s.bacnet.object, _property_name(s.bacnet.property))
            )
    return out


def _property_name(name: str) -> str:
    """BACnet's spelling of a property (``presentValue`` -> ``present-value``), as answers name it."""
    from bacpypes3.basetypes import PropertyIdentifier

    try:
        return str(PropertyIdentifier(name))
    except (ValueError, KeyError, TypeError):
        raise BacnetConfigError(f"bacnet property {name!r} is not a BACnet property name (e.g. 'present-value')") from None


# ---------------------------------------------------------------- the functional core


@dataclass(frozen=True)
class PointProblem:
    """A point read but not usable as it is: its field, the value read, and what to do."""

    building_id: str
    sensor_id: str
    device: str
    object: str
    field: str  # "units" or the property read
    value: str
    message: str


@dataclass(frozen=True)
class ReadError:
    """What a device answered for one property instead of a value (e.g. ``object: unknown-object``)."""

    text: str


def reading_unit(bacnet_units: str, sensor_unit: str) -> tuple[str, bool]:
    """The unit a reading is sent with, and whether it is (or converts to) the sensor's unit."""
    if bacnet_units == "no-units" and sensor_unit in COUNT_UNITS:
        return sensor_unit, True
    unit = BACNET_UNITS.get(bacnet_units, bacnet_units)
    return unit, unit == sensor_unit or (unit, sensor_unit) in UNIT_CONVERSIONS


def real32(value: float) -> float:
    """The shortest decimal that is the same float32: what the device meant by its single-precision REAL."""
    return float(str(np.float32(value)))  # numpy prints the shortest round-tripping digits


def readings_from_answers(
    points: list[Point], answers: dict[tuple[str, str], Any], ts: datetime
) -> tuple[list[dict[str, Any]], list[PointProblem]]:
    """Readings (bronze's raw record shape) from one device's answers, and the points that need attention.

    `answers` maps (object, property) to the value read, its units' name under (object, "units"), or a
    `ReadError`. A point whose value could not be read yields no reading and a problem; a point whose units
    do not fit yields the reading with the unit the device sent (the shared screen quarantines it, so it is
    kept as received) and a problem that says what to fix.
    """
    records: list[dict[str, Any]] = []
    problems: list[PointProblem] = []
    for p in points:
        value = answers.get((p.object, p.property))
        units = answers.get((p.object, "units"))

        def problem(field_name: str, shown: str, message: str) -> None:
            problems.append(PointProblem(p.building_id, p.sensor_id, p.device, p.object, field_name, shown, message))

        if value is None or isinstance(value, ReadError):
            why = value.text if isinstance(value, ReadError) else "no value in the answer"
            problem(p.property, why, f"{p.device}: {p.object} {p.property} for sensor {p.building_id}/{p.sensor_id} "
                    f"could not be read ({why}); check the object in the registry's bacnet mapping")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problem(p.property, repr(value), f"{p.device}: {p.object} {p.property} is {value!r}, not a number; "
                    "map the sensor to an analog or integer object")
            continue
        if isinstance(units, ReadError) or units is None:
            # Objects without a units property (some integer values) are taken to be in the sensor's unit.
            unit, fits = p.unit, True
        else:
            unit, fits = reading_unit(str(units), p.unit)
            if not fits:
                problem("units", str(units),
                        f"{p.device}: field 'units' of {p.object} is {str(units)!r}, which is not and does not convert to "
                        f"sensor {p.building_id}/{p.sensor_id}'s unit {p.unit!r}; its readings go to quarantine. Remedy: map "
                        f"the sensor to the object that measures {p.metric} in {p.unit!r}, or correct the sensor's unit "
                        "in the registry (or the object's units in the BMS)")
        records.append({
            "building_id": p.building_id, "sensor_id": p.sensor_id, "metric": p.metric, "ts": ts,
            "value": float(value), "unit": unit,
        })
    return records, problems


def slot_start(now: datetime, interval_s: float) -> datetime:
    """The start of the interval slot holding `now` (UTC, aligned to the epoch)."""
    step = int(round(interval_s * 1e6))
    us = int(now.timestamp() * 1e6)
    return datetime.fromtimestamp((us - us % step) / 1e6, tz=timezone.utc)


def readings_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.table({
        "building_id": pa.array([r["building_id"] for r in records], pa.string()),
        "sensor_id": pa.array([r["sensor_id"] for r in records], pa.string()),
        "metric": pa.array([r["metric"] for r in records], pa.string()),
        "ts": pa.array([r["ts"] for r in records], pa.timestamp("us", tz="UTC")),
        "value": pa.array([r["value"] for r in records], pa.float64()),
        "unit": pa.array([r["unit"] for r in records], pa.string()),
    })


# ---------------------------------------------------------------- the BACnet shell


@dataclass
class DeviceHealth:
    address: str
    device_instance: int | None
    points: int
    polls: int = 0
    answered: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    up: bool | None = None  # None until first polled
    last_error: str = ""

    @property
    def name(self) -> str:
        return device_name(self.address, self.device_instance)


@dataclass
class PollResult:
    ts: datetime
    records: list[dict[str, Any]]
    problems: list[PointProblem]
    down: list[str]  # devices that did not answer this poll
    seconds: float


class DeviceNotAnswering(Exception):
    pass


class BacnetMetrics:
    """Prometheus series of one poller, in their own registry (a process may run several pollers)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.device_up = Gauge("wattflow_bacnet_device_up", "1 when the device answered its last poll", ["device"],
                               registry=self.registry)
        self.polls = Counter("wattflow_bacnet_polls", "Polls of a device by outcome", ["device", "outcome"],
                             registry=self.registry)
        self.readings = Counter("wattflow_bacnet_readings", "Readings read from a device", ["device"], registry=self.registry)
        self.point_problems = Counter("wattflow_bacnet_point_problems", "Points read but not usable (units, errors)",
                                      ["device", "field"], registry=self.registry)

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


class BacnetPoller:
    """A BACnet/IP client application that reads the registry's points; use as ``async with``.

    bacpypes3 runs on asyncio: create and use the poller inside one running event loop.
    """

    def __init__(
        self,
        points: list[Point],
        *,
        local_address: str,
        device_instance: int,
        request_timeout_s: float = 3.0,
        request_retries: int = 1,
        max_objects_per_request: int = 16,
    ) -> None:
        if not points:
            raise BacnetConfigError("no sensor in the registry has a 'bacnet' mapping; add one per sensor to poll, e.g. "
                                    "bacnet: {address: '192.168.10.20', device_instance: 1001, object: 'analog-input,3'}")
        self.points = points
        self.local_address = local_address
        self.device_instance = device_instance
        self.request_timeout_s = request_timeout_s
        self.request_retries = request_retries
        self.max_objects = max(1, max_objects_per_request)
        self.by_device: dict[str, list[Point]] = defaultdict(list)
        for p in points:
            self.by_device[p.address].append(p)
        self.health = {a: DeviceHealth(a, ps[0].device_instance, len(ps)) for a, ps in self.by_device.items()}
        self.metrics = BacnetMetrics()
        self.app: Any = None

    async def __aenter__(self) -> "BacnetPoller":
        from bacpypes3.app import Application
        from bacpypes3.local.device import DeviceObject
        from bacpypes3.local.networkport import NetworkPortObject

        device = DeviceObject(
            objectIdentifier=("device", self.device_instance), objectName=f"wattflow-{self.device_instance}",
            vendorIdentifier=999,  # ASHRAE's "unassigned"; we define no proprietary objects
            apduTimeout=int(self.request_timeout_s * 1000), numberOfApduRetries=self.request_retries,
        )
        try:
            port = NetworkPortObject(self.local_address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
                                     networkNumber=0, networkNumberQuality="unknown")
            self.app = Application.from_object_list([device, port])
        except (OSError, ValueError) as err:
            raise BacnetConfigError(self._address_hint(str(err))) from None
        try:
            await wait_bound(self.app, timeout_s=5.0)
        except TimeoutError:
            self.app.close()
            raise BacnetConfigError(self._address_hint("no UDP socket could be bound there within 5 s")) from None
        return self

    def _address_hint(self, why: str) -> str:
        return (f"bacnet.local_address {self.local_address!r} cannot be used: {why}; set WATTFLOW_BACNET__LOCAL_ADDRESS "
                "to this host's address on the BMS network (host[/prefix][:port])")

    async def __aexit__(self, *exc) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    async def _read_device(self, address: str, points: list[Point]) -> dict[tuple[str, str], Any]:
        from bacpypes3.apdu import ErrorRejectAbortNack
        from bacpypes3.basetypes import ErrorType, PropertyIdentifier
        from bacpypes3.pdu import Address
        from bacpypes3.primitivedata import Real

        objects = list(dict.fromkeys((p.object, p.property) for p in points))
        answers: dict[tuple[str, str], Any] = {}
        # A whole request that gets no answer: BACnet's own timeout and retries, plus a margin for a loaded host.
        limit = self.request_timeout_s * (self.request_retries + 1) + 2.0
        instance = self.health[address].device_instance
        device_obj = f"device,{instance}" if instance is not None else None
        for i in range(0, len(objects), self.max_objects):
            chunk = objects[i : i + self.max_objects]
            spec: list[Any] = []
            if device_obj is not None and i == 0:
                # The device's own object, in the same request: an address now held by another device (a
                # controller replaced, an IP reassigned) answers with another device's points otherwise.
                spec += [device_obj, ["object-identifier"]]
            for obj, prop in chunk:
                spec += [obj, [prop, "units"]]
            try:
                response = await asyncio.wait_for(self.app.read_property_multiple(Address(address), spec), limit)
            except asyncio.TimeoutError:
                raise DeviceNotAnswering(f"no answer within {limit:g} s") from None
            except ErrorRejectAbortNack as err:  # bacpypes3 raises the abort of a request that timed out
                raise DeviceNotAnswering(_nack_text(err)) from None
            if isinstance(response, ErrorRejectAbortNack):
                raise DeviceNotAnswering(_nack_text(response))
            if response is None:
                raise DeviceNotAnswering("an answer that is not a ReadPropertyMultiple acknowledgement")
            for objid, propid, _index, value in response:
                key = (str(objid), str(PropertyIdentifier(propid)))
                if isinstance(value, ErrorType):
                    answers[key] = ReadError(f"{value.errorClass}: {value.errorCode}")
                elif key[1] == "units":
                    answers[key] = str(value)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    # REAL (single precision) for analog objects; Double for large-analog-value; integers as they are.
                    answers[key] = real32(value) if isinstance(value, Real) else value
                else:
                    answers[key] = value
        if device_obj is not None and isinstance(answers.get((device_obj, "object-identifier")), ReadError):
            raise DeviceNotAnswering(
                f"the device at {address} is not device {instance} ({answers[(device_obj, 'object-identifier')].text}); "
                "check the bacnet address and device_instance in the registry"
            )
        return answers

    async def poll(self, ts: datetime) -> PollResult:
        """Read every device once, concurrently; readings stamped `ts`."""
        started = time.monotonic()
        addresses = list(self.by_device)
        outcomes = await asyncio.gather(
            *(self._read_device(a, self.by_device[a]) for a in addresses), return_exceptions=True
        )
        records: list[dict[str, Any]] = []
        problems: list[PointProblem] = []
        down: list[str] = []
        for address, outcome in zip(addresses, outcomes):
            h = self.health[address]
            h.polls += 1
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):  # cancellation, Ctrl-C: stop polling
                    raise outcome
                # Whatever one device does (no answer, an answer bacpypes3 cannot decode) is its own problem.
                if not isinstance(outcome, DeviceNotAnswering):
                    log.warning("bacnet device answer could not be used", device=h.name,
                                error=f"{type(outcome).__name__}: {outcome}")
                self._device_failed(h, str(outcome) or type(outcome).__name__)
                down.append(h.name)
                continue
            self._device_answered(h)
            got, bad = readings_from_answers(self.by_device[address], outcome, ts)
            records += got
            problems += bad
            self.metrics.readings.labels(h.name).inc(len(got))
            for pr in bad:
                self.metrics.point_problems.labels(h.name, pr.field).inc()
        return PollResult(ts, records, problems, down, time.monotonic() - started)

    def _device_failed(self, h: DeviceHealth, error: str) -> None:
        h.failed += 1
        h.consecutive_failures += 1
        h.last_error = error
        self.metrics.polls.labels(h.name, "failed").inc()
        self.metrics.device_up.labels(h.name).set(0)
        if h.up is not False:
            log.warning("bacnet device not answering; its points are skipped until it answers again",
                        device=h.name, error=error)
        h.up = False

    def _device_answered(self, h: DeviceHealth) -> None:
        h.answered += 1
        self.metrics.polls.labels(h.name, "answered").inc()
        self.metrics.device_up.labels(h.name).set(1)
        if h.up is False:
            log.info("bacnet device answering again", device=h.name, missed_polls=h.consecutive_failures)
        h.consecutive_failures = 0
        h.up = True


async def wait_bound(app: Any, timeout_s: float) -> None:
    """Until every BACnet/IP link layer of `app` has its UDP socket. bacpypes3 binds in a background task
    that retries an address it cannot bind forever, once a second: a wrong address would otherwise look
    like devices that never answer."""
    ready = [ll.server._local_transport_ready.wait() for ll in app.link_layers.values() if hasattr(ll, "server")]
    try:
        await asyncio.wait_for(asyncio.gather(*ready), timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"BACnet/IP socket not bound within {timeout_s:g} s") from None


def _nack_text(err: Any) -> str:
    """'abort: no-response' rather than the PDU's repr."""
    for attr in ("apduAbortRejectReason", "errorCode"):
        reason = getattr(err, attr, None)
        if reason is not None:
            kind = type(err).__name__.replace("PDU", "").lower()
            return f"{kind}: {reason}"
    return type(err).__name__


# ---------------------------------------------------------------- sinks


@dataclass
class SinkResult:
    sent: int = 0
    landed: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Sink(Protocol):
    def send(self, records: list[dict[str, Any]]) -> SinkResult: ...
    def close(self) -> None: ...


class BronzeSink:
    """Land each poll in bronze directly: the shared screen, calibration and quarantine."""

    def __init__(self, *, engine: Any, registry_loader: Callable[[], BuildingRegistry], settings: Any,
                 source: str = "bacnet") -> None:
        self.engine, self.registry_loader, self.settings, self.source = engine, registry_loader, settings, source

    def send(self, records: list[dict[str, Any]]) -> SinkResult:
        from lakehouse.sources.screen import land_source_readings

        if not records:
            return SinkResult()
        result = land_source_readings(readings_table(records), source=self.source, registry=self.registry_loader(),
                                      engine=self.engine, settings=self.settings)
        return SinkResult(len(records), result.landed, result.quarantined, dict(result.reasons))

    def close(self) -> None:
        pass


class MqttSink:
    """Publish each poll onto MQTT as a building gateway does (QoS 1, one JSON list per building and poll)."""

    def __init__(self, *, broker: str, site_of: dict[str, str], security: dict[str, Any] | None = None,
                 ack_timeout_s: float = 30.0) -> None:
        from lakehouse.sources.publish import Publisher

        self.site_of = site_of
        self.ack_timeout_s = ack_timeout_s
        self.publisher = Publisher(broker, security=security).__enter__()

    def send(self, records: list[dict[str, Any]]) -> SinkResult:
        from lakehouse.sources.publish import reading_messages

        if not records:
            return SinkResult()
        for msg in reading_messages(readings_table(records), self.site_of):
            self.publisher.publish(msg)
        if not self.publisher.wait_acknowledged(self.ack_timeout_s):
            log.warning("mqtt broker has not acknowledged every reading yet; the publisher keeps them in flight",
                        timeout_s=self.ack_timeout_s)
        return SinkResult(sent=len(records))

    def close(self) -> None:
        self.publisher.__exit__(None, None, None)


class KafkaSink:
    """Publish each poll onto the sensor topic (`wattflow ingest kafka` lands it): the shared payload format,
    keyed by building, through the idempotent producer; a poll counts as sent once the broker acknowledged it."""

    def __init__(self, *, bootstrap: str, topic: str, payload_format: str = "batch", config: dict[str, Any] | None = None,
                 ack_timeout_s: float = 30.0) -> None:
        from lakehouse.sources.kafka import KafkaPublisher

        self.topic, self.payload_format, self.ack_timeout_s = topic, payload_format, ack_timeout_s
        self.publisher = KafkaPublisher(bootstrap, config=config, linger_ms=5)

    def send(self, records: list[dict[str, Any]]) -> SinkResult:
        from lakehouse.sources.kafka import reading_messages

        if not records:
            return SinkResult()
        table = readings_table(records)
        for msg in reading_messages(table, readings_per_message=max(1, len(records)), payload_format=self.payload_format):
            self.publisher.publish(self.topic, msg.key, msg.payload, msg.readings)
        if self.publisher.flush(self.ack_timeout_s):
            log.warning("kafka broker has not acknowledged every reading yet; the producer keeps them queued",
                        timeout_s=self.ack_timeout_s)
        return SinkResult(sent=len(records))

    def close(self) -> None:
        self.publisher.flush(self.ack_timeout_s)


# ---------------------------------------------------------------- the command's entry point


@dataclass
class BacnetSummary:
    polls: int = 0
    readings: int = 0  # read from devices
    sent: int = 0
    landed: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    devices: list[DeviceHealth] = field(default_factory=list)
    problems: dict[tuple[str, str, str], PointProblem] = field(default_factory=dict)  # latest per point and field
    metrics_text: str = ""

    def add(self, poll: PollResult, sent: SinkResult) -> None:
        self.polls += 1
        self.readings += len(poll.records)
        self.sent += sent.sent
        self.landed += sent.landed
        self.quarantined += sent.quarantined
        for k, v in sent.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        for pr in poll.problems:
            key = (pr.building_id, pr.sensor_id, pr.field)
            if key not in self.problems:
                log.warning("bacnet point needs attention", device=pr.device, object=pr.object, field=pr.field,
                            value=pr.value, problem=pr.message)
            self.problems[key] = pr


def make_sink(kind: str, settings: Any, registry: BuildingRegistry, *, engine: Any = None,
              registry_file: Any = None, broker: str | None = None) -> Sink:
    if kind == "bronze":
        from lakehouse.engine import get_engine
        from lakehouse.sources.mqtt import registry_file_loader
        from pathlib import Path

        return BronzeSink(engine=engine or get_engine(settings), settings=settings,
                          registry_loader=registry_file_loader(Path(registry_file) if registry_file else None))
    if kind == "mqtt":
        from lakehouse.sources.mqtt import security_options

        site_of = {b.building_id: b.site_id for b in registry.buildings}
        return MqttSink(broker=broker or settings.mqtt.broker, site_of=site_of, security=security_options(settings.mqtt))
    if kind == "kafka":
        k = settings.kafka
        return KafkaSink(bootstrap=broker or k.bootstrap_servers, topic=k.topic, payload_format=k.payload_format,
                         config=k.client_config)
    raise BacnetConfigError(f"--sink {kind!r}: expected bronze, mqtt or kafka")


async def run_poller(
    poller: BacnetPoller,
    sink: Sink,
    *,
    interval_s: float,
    polls: int | None = None,
    duration_s: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    on_poll: Callable[[PollResult, SinkResult], None] | None = None,
    summary: BacnetSummary | None = None,
) -> BacnetSummary:
    """Poll at the start of every interval slot until `polls` or `duration_s`; send each poll to the sink."""
    summary = summary if summary is not None else BacnetSummary()
    summary.devices = list(poller.health.values())  # live objects: a summary taken after Ctrl-C is current
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    last_slot: datetime | None = None
    while polls is None or summary.polls < polls:
        slot = slot_start(clock(), interval_s)
        if last_slot is not None and slot <= last_slot:
            slot = last_slot + timedelta(seconds=interval_s)
            wait = (slot - clock()).total_seconds()
            if deadline is not None and time.monotonic() + max(wait, 0) >= deadline:
                break
            if wait > 0:
                await asyncio.sleep(wait)
        elif last_slot is not None and slot > last_slot + timedelta(seconds=interval_s):
            log.warning("bacnet poll overran its interval; slots skipped", skipped=int((slot - last_slot).total_seconds() // interval_s) - 1)
        last_slot = slot
        result = await poller.poll(slot)
        sent = await asyncio.to_thread(sink.send, result.records)
        summary.add(result, sent)
        if on_poll is not None:
            on_poll(result, sent)
        if deadline is not None and time.monotonic() >= deadline:
            break
    summary.devices = list(poller.health.values())
    summary.metrics_text = poller.metrics.text()
    return summary


def ingest_bacnet(
    *,
    sink: str | None = None,
    polls: int | None = None,
    duration_s: float | None = None,
    interval_s: float | None = None,
    buildings: Iterable[str] | None = None,
    broker: str | None = None,
    registry_file: Any = None,
    engine: Any = None,
    settings: Any | None = None,
) -> BacnetSummary:
    """Poll the registry's BACnet points into the configured sink; settings give every default (`settings.bacnet`)."""
    from pathlib import Path

    from lakehouse.registry_file import load_registry
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    b = settings.bacnet
    registry = load_registry(Path(registry_file) if registry_file else None)
    points = registry_points(registry, buildings)
    poller = BacnetPoller(points, local_address=b.local_address, device_instance=b.device_instance,
                          request_timeout_s=b.request_timeout_s, request_retries=b.request_retries,
                          max_objects_per_request=b.max_objects_per_request)
    target = make_sink(sink or b.sink, settings, registry, engine=engine, registry_file=registry_file, broker=broker)
    if b.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(b.metrics_port, addr="127.0.0.1", registry=poller.metrics.registry)

    summary = BacnetSummary()

    async def main() -> BacnetSummary:
        async with poller:
            return await run_poller(poller, target, interval_s=interval_s or b.poll_interval_s, polls=polls,
                                    duration_s=duration_s, summary=summary)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # Ctrl-C: what was sent is sent; the summary says how far it got
        summary.metrics_text = poller.metrics.text()
        return summary
    finally:
        target.close()
