"""MQTT sensor stream into bronze: QoS 1, a persistent session, and acknowledgement only after the commit.

Delivery contract. The client connects with a fixed client id and ``clean_session=False``, so the broker
keeps the subscription and every unacknowledged QoS 1 message while we are away (a crash, a broker
restart). Messages are acknowledged by hand (paho ``manual_ack=True``) and only after the Delta commit
that holds their readings, so a message is either in bronze or still at the broker: nothing acknowledged
is lost. A message the broker delivers again (after a reconnect, its PUBACK lost) is harmless: bronze
upserts on the reading key, and copies inside one batch are dropped before landing.

Payloads are JSON readings (one object or a list) or the compact batch form (`lakehouse.sources.payload`,
shared with Kafka). Topic levels fill what the payload leaves out:
``sites/{site}/buildings/{building_id}/sensors/{sensor_id}``. A payload that is not JSON, an item that is
not an object, or a reading that fails a check goes to quarantine with its reason; it is acknowledged
with its batch and never blocks the stream.

Batches commit in one worker thread, in order, while the next batch is decoded (Delta I/O releases
the GIL), so decoding and committing overlap. While a commit runs, the open batch keeps growing (group
commit, up to `batch_backlog_factor` x the count): a commit costs about the same for 5,000 or 50,000
readings, so a slow commit makes the next batch bigger instead of the backlog longer.

Broker settings that matter (Mosquitto): ``max_queued_messages`` (default 1000) silently drops QoS 1
messages beyond it for an offline or slow client: set it to 0 or a size that covers the longest outage.
``max_inflight_messages`` (default 20) bounds how many unacknowledged messages we hold, so a batch larger
than inflight x readings-per-message fills by age, not by count.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from lakehouse.bronze import LandingResult
from lakehouse.sources.payload import Decoded, decode_message, readings_table, records_table  # noqa: F401 (records_table: API)
from lakehouse.sources.screen import Rejected, land_source_readings
from wattflow.log import get_logger

log = get_logger(__name__)


class MqttConnectionError(ConnectionError):
    """The broker cannot be reached, refused the TLS handshake, or refused the credentials."""


def secure_client(
    client: Any,
    *,
    username: str = "",
    password: str = "",
    tls: bool = False,
    tls_ca_file: str = "",
    tls_cert_file: str = "",
    tls_key_file: str = "",
) -> bool:
    """Credentials and TLS on a paho client (consumer and publisher alike); True when TLS is on."""
    on = bool(tls or tls_ca_file or tls_cert_file)
    if on:
        import ssl

        for what, path in (("tls_ca_file", tls_ca_file), ("tls_cert_file", tls_cert_file), ("tls_key_file", tls_key_file)):
            if path and not Path(path).is_file():
                raise MqttConnectionError(f"mqtt.{what}: no file at {path!r}")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise MqttConnectionError("mqtt.tls_cert_file and mqtt.tls_key_file go together: give both or neither")
        # Verifies the broker's certificate and host name; presents ours when the broker asks (mutual TLS).
        client.tls_set(
            ca_certs=tls_ca_file or None,
            certfile=tls_cert_file or None,
            keyfile=tls_key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if username:
        client.username_pw_set(username, password or None)
    return on


def security_options(mqtt_settings: Any) -> dict[str, Any]:
    """The `secure_client` keywords from `settings.mqtt`."""
    m = mqtt_settings
    return {
        "username": m.username, "password": m.password, "tls": m.tls, "tls_ca_file": m.tls_ca_file,
        "tls_cert_file": m.tls_cert_file, "tls_key_file": m.tls_key_file,
    }


def parse_broker(broker: str) -> tuple[str, int]:
    host, sep, port = broker.rpartition(":")
    if not sep:
        return broker, 1883
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise ValueError(f"--broker: expected HOST:PORT, got {broker!r}") from None


def topic_ids(topic: str) -> dict[str, str]:
    """Ids carried by the topic: ``sites/s1/buildings/b1/sensors/m1`` -> site_id, building_id, sensor_id."""
    levels = topic.split("/")
    out: dict[str, str] = {}
    for name, key in (("sites", "site_id"), ("buildings", "building_id"), ("sensors", "sensor_id")):
        if name in levels:
            i = levels.index(name)
            if i + 1 < len(levels) and levels[i + 1]:
                out[key] = "/".join(levels[i + 1 :]) if name == "sensors" else levels[i + 1]
    return out


def decode_payload(topic: str, payload: bytes) -> tuple[list[dict[str, Any]], dict[str, str], list[Rejected]]:
    """The reading objects of one message, the ids its topic carries, and what is not a reading.

    Never raises for any payload (`lakehouse.sources.payload.decode_message`, shared with Kafka): whatever
    cannot be decoded comes back as a `Rejected` with its check name and a reason, and the message is
    acknowledged with its batch. A compact batch's readings come back as objects here.
    """
    decoded = _decode(topic, payload)
    records = decoded.records
    if decoded.columns is not None and len(decoded.columns):
        records = records + readings_table([Decoded(columns=decoded.columns)]).to_pylist()
    return records, decoded.ids, decoded.rejected


def _decode(topic: str, payload: bytes) -> Decoded:
    ids = topic_ids(topic)
    ids.pop("site_id", None)
    return decode_message(payload, ids=ids, origin={"topic": topic})


@dataclass
class _Message:
    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int
    received_at: float


@dataclass
class Batch:
    """One committed micro-batch: what was landed and which messages it acknowledged."""

    messages: int
    readings: int
    redelivered: int
    result: LandingResult
    opened_at: float
    committed_at: float
    message_keys: list[tuple[str, bytes]] = field(default_factory=list, repr=False)


@dataclass
class StreamStats:
    messages: int = 0
    readings: int = 0  # reading records received (landed + quarantined)
    landed: int = 0
    quarantined: int = 0
    redelivered: int = 0  # copies of a message already in the open batch, dropped
    batches: int = 0
    reconnects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class MqttIngest:
    """Consume a topic into bronze until `max_readings`, `idle_timeout` or `stop()`.

    Run `run()` in the calling thread; paho's network loop runs in its own thread and only enqueues.
    """

    def __init__(
        self,
        *,
        broker: str,
        topic: str,
        client_id: str,
        engine: Any,
        registry_loader: Callable[[], Any],
        qos: int = 1,
        batch_max_readings: int = 5000,
        batch_max_age_s: float = 1.0,
        backlog_factor: int = 10,
        username: str = "",
        password: str = "",
        tls: bool = False,
        tls_ca_file: str = "",
        tls_cert_file: str = "",
        tls_key_file: str = "",
        source: str | None = None,
        on_commit: Callable[[Batch], None] | None = None,
        settings: Any | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_broker(broker)
        self.topic, self.qos = topic, qos
        self.engine = engine
        self.registry_loader = registry_loader
        self.batch_max_readings = batch_max_readings
        self.batch_max_age_s = batch_max_age_s
        self.backlog_factor = backlog_factor
        self.source = source or f"mqtt:{self.host}:{self.port}"
        self.on_commit = on_commit
        self.settings = settings
        self.stats = StreamStats()
        self._inbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._generation = 0
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._worker_idle = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self.username = username
        self.tls = secure_client(
            self.client, username=username, password=password, tls=tls, tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file, tls_key_file=tls_key_file,
        )
        self._refused: str | None = None
        self._dropped: str | None = None
        self._first_answer = threading.Event()
        self.client.reconnect_delay_set(min_delay=1, max_delay=8)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # paho's thread ---------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connect refused", reason=str(reason_code))
            self._refused = str(reason_code)
            self._first_answer.set()  # wakes _connect(), which reports the refusal
            return
        with self._lock:
            self._generation += 1
            if self._generation > 1:
                self.stats.reconnects += 1
        client.subscribe(self.topic, qos=self.qos)
        self._connected.set()
        self._first_answer.set()
        log.info("mqtt connected", broker=f"{self.host}:{self.port}", session_present=flags.session_present,
                 generation=self._generation)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._first_answer.is_set():
            # Dropped before the broker answered CONNECT: with TLS, the broker refusing our certificate
            # (or its absence) looks exactly like this from the client's side.
            self._dropped = str(reason_code)
            self._first_answer.set()
            return
        if not self._stop.is_set():
            log.warning("mqtt disconnected; reconnecting", reason=str(reason_code))

    def _on_message(self, client, userdata, message) -> None:
        self._inbox.put(_Message(message.mid, message.qos, message.topic, message.payload, self._generation, time.time()))

    # the consuming thread --------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _connect(self, connect_timeout: float) -> None:
        """First connection, synchronously, so that a TLS or credential problem is one clear error now
        rather than a reconnect loop; later reconnects are paho's (persistent session, same client id)."""
        import ssl

        where = f"the MQTT broker at {self.host}:{self.port}"
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.client.connect(self.host, self.port, keepalive=30)
                break
            except ssl.SSLError as err:
                hint = (
                    "check mqtt.tls_ca_file (the CA that signed the broker's certificate) and that the broker wants "
                    "the client certificate given in mqtt.tls_cert_file / mqtt.tls_key_file"
                )
                raise MqttConnectionError(f"TLS handshake with {where} failed: {err.reason or err}; {hint}") from err
            except (ConnectionRefusedError, TimeoutError, socket.timeout) as err:
                if time.monotonic() >= deadline:
                    raise MqttConnectionError(f"no connection to {where} within {connect_timeout:g} s: {err}") from err
                time.sleep(0.5)
            except OSError as err:
                raise MqttConnectionError(f"cannot reach {where}: {err}") from err
        self.client.loop_start()
        if not self._first_answer.wait(max(0.1, deadline - time.monotonic())):
            raise MqttConnectionError(f"no answer from {where} within {connect_timeout:g} s")
        if self._dropped is not None:
            hint = (
                "the broker accepted TLS but dropped the session: it probably requires a client certificate it "
                "trusts (mqtt.tls_cert_file / mqtt.tls_key_file, signed by a CA the broker knows)"
                if self.tls else "is it a TLS listener? then set mqtt.tls (and mqtt.tls_ca_file)"
            )
            raise MqttConnectionError(f"{where} closed the connection before the MQTT session began ({self._dropped}); {hint}")
        if self._refused is not None:
            who = f"user {self.username!r}" if self.username else "an anonymous client"
            raise MqttConnectionError(
                f"{where} refused {who}: {self._refused}; check mqtt.username and the password in WATTFLOW_MQTT__PASSWORD"
                + ("" if self.username else " (this broker may not allow anonymous clients)")
            )

    def run(self, *, max_readings: int | None = None, idle_timeout: float | None = None, connect_timeout: float = 30.0) -> StreamStats:
        try:
            self._connect(connect_timeout)
            self._consume(max_readings, idle_timeout)
        finally:
            self._stop.set()
            self.client.disconnect()
            self.client.loop_stop()
        return self.stats

    def _consume(self, max_readings: int | None, idle_timeout: float | None) -> None:
        # Double buffering: one batch commits in the worker thread (Delta I/O releases the GIL) while
        # this thread decodes the next one. The hand-over queue holds one batch, which is the back-pressure.
        handoff: queue.Queue = queue.Queue(maxsize=1)
        failure: list[BaseException] = []
        worker = threading.Thread(target=self._commit_worker, args=(handoff, failure), name="mqtt-commit", daemon=True)
        worker.start()
        try:
            self._read_loop(handoff, failure, max_readings, idle_timeout)
        finally:
            handoff.put(None)
            worker.join()
        if failure:
            raise failure[0]

    def _worker_busy(self, handoff: queue.Queue) -> bool:
        return handoff.full() or not self._worker_idle.is_set()

    def _commit_worker(self, handoff: queue.Queue, failure: list[BaseException]) -> None:
        while True:
            self._worker_idle.set()
            batch = handoff.get()
            self._worker_idle.clear()
            if batch is None:
                return
            if failure:
                continue  # after a failed commit nothing more is committed or acknowledged
            try:
                self._commit(*batch)
            except BaseException as err:  # surfaced by _consume; the batch stays unacknowledged at the broker
                failure.append(err)
                self._stop.set()

    def _read_loop(self, handoff: queue.Queue, failure: list, max_readings: int | None, idle_timeout: float | None) -> None:
        pending: list[_Message] = []
        records: list[Decoded] = []
        n_records = 0
        rejected: list[Rejected] = []
        seen: set[tuple[str, bytes]] = set()
        redelivered = 0
        opened_at = 0.0
        submitted = 0  # readings handed to the commit worker
        last_message = time.monotonic()
        # Group commit: while the worker is still committing the previous batch, the open batch keeps
        # growing (up to backlog_factor x the count) instead of queueing behind it, so a slow commit makes
        # batches larger rather than the backlog longer. The count and age are when a batch may commit.
        hard_cap = self.batch_max_readings * max(1, self.backlog_factor)
        while not failure:
            n_buffered = n_records + len(rejected)
            waiting = bool(pending) and self._worker_busy(handoff)
            limit = hard_cap if waiting else self.batch_max_readings
            timeout = 0.2
            if pending and not waiting:
                timeout = max(0.0, min(timeout, opened_at + self.batch_max_age_s - time.time()))
            elif waiting:
                timeout = 0.02
            try:
                msg = self._inbox.get(timeout=timeout) if n_buffered < limit else None
            except queue.Empty:
                msg = None
            # Drain what is already waiting: after a slow commit, the backlog forms full batches
            # instead of one batch per message whose age already ran out.
            while msg is not None:
                last_message = time.monotonic()
                if not pending:
                    opened_at = msg.received_at
                pending.append(msg)
                key = (msg.topic, msg.payload)
                if key in seen:
                    redelivered += 1
                else:
                    seen.add(key)
                    decoded = _decode(msg.topic, msg.payload)
                    if decoded.readings:
                        records.append(decoded)
                        n_records += decoded.readings
                    rejected.extend(decoded.rejected)
                n_buffered = n_records + len(rejected)
                if n_buffered >= limit:
                    break
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    msg = None
            due = pending and (
                n_buffered >= self.batch_max_readings
                or time.time() - opened_at >= self.batch_max_age_s
                or self._stop.is_set()
                or (max_readings is not None and submitted + n_buffered >= max_readings)
            )
            must = pending and (n_buffered >= hard_cap or self._stop.is_set())
            if due and (must or not self._worker_busy(handoff)):
                handoff.put((pending, readings_table(records), rejected, redelivered, opened_at))
                submitted += n_buffered
                pending, records, rejected, seen, redelivered, n_records = [], [], [], set(), 0, 0
            if not pending:
                if self._stop.is_set():
                    return
                if max_readings is not None and submitted >= max_readings:
                    return
                if idle_timeout is not None and time.monotonic() - last_message >= idle_timeout:
                    return

    def _commit(self, pending: list[_Message], table: pa.Table, rejected, redelivered: int, opened_at: float) -> None:
        result = land_source_readings(
            table,
            source=self.source,
            registry=self.registry_loader(),
            engine=self.engine,
            pre_rejected=rejected,
            batch_id=f"{self.source}-{uuid.uuid4().hex[:12]}",
            now=datetime.now(timezone.utc),
            settings=self.settings,
        )
        committed_at = time.time()
        # Acknowledge only now that the rows are committed. A message received on an earlier connection is
        # not acknowledged: the broker redelivers it on this one, and that copy gets acknowledged instead.
        current = self._generation
        for m in pending:
            if m.qos > 0 and m.generation == current:
                self.client.ack(m.mid, m.qos)
        s = self.stats
        s.messages += len(pending)
        s.readings += result.received
        s.landed += result.landed
        s.quarantined += result.quarantined
        s.redelivered += redelivered
        s.batches += 1
        for k, v in result.reasons.items():
            s.reasons[k] = s.reasons.get(k, 0) + v
        log.debug("mqtt batch committed", messages=len(pending), readings=result.received, landed=result.landed)
        if self.on_commit is not None:
            self.on_commit(
                Batch(len(pending), result.received, redelivered, result, opened_at, committed_at,
                      [(m.topic, m.payload) for m in pending])
            )


def registry_file_loader(path: Any = None) -> Callable[[], Any]:
    """A loader that re-reads the registry file only when it changed (new buildings join a running stream)."""
    from lakehouse.registry_file import load_registry, registry_path

    target = registry_path() if path is None else path
    state: dict[str, Any] = {"mtime": None, "registry": None}

    def load():
        try:
            mtime = target.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if state["registry"] is None or mtime != state["mtime"]:
            state["registry"], state["mtime"] = load_registry(target), mtime
        return state["registry"]

    return load


def ingest_mqtt(
    *,
    broker: str | None = None,
    topic: str | None = None,
    max_readings: int | None = None,
    idle_timeout: float | None = None,
    batch_max_readings: int | None = None,
    batch_max_age_s: float | None = None,
    client_id: str | None = None,
    engine: Any | None = None,
    registry_file: Any = None,
    on_commit: Callable[[Batch], None] | None = None,
    settings: Any | None = None,
) -> StreamStats:
    """Consume the configured topic into bronze; settings give every default (`settings.mqtt`)."""
    from pathlib import Path

    from lakehouse.engine import get_engine
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    m = settings.mqtt
    ingest = MqttIngest(
        broker=broker or m.broker,
        topic=topic or m.topic,
        client_id=client_id or m.client_id,
        engine=engine or get_engine(settings),
        registry_loader=registry_file_loader(Path(registry_file) if registry_file else None),
        qos=m.qos,
        batch_max_readings=batch_max_readings or m.batch_max_readings,
        batch_max_age_s=batch_max_age_s or m.batch_max_age_s,
        backlog_factor=m.batch_backlog_factor,
        **security_options(m),
        on_commit=on_commit,
        settings=settings,
    )
    try:
        return ingest.run(max_readings=max_readings, idle_timeout=idle_timeout, connect_timeout=m.connect_timeout_s)
    except KeyboardInterrupt:  # Ctrl-C: the open batch is not acknowledged, so the broker keeps it
        return ingest.stats
