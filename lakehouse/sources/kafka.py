"""Kafka sensor stream into bronze: a consumer group whose offsets move only after the Delta commit.

Delivery contract. Auto-commit is off. Messages are decoded (`lakehouse.sources.payload`, the same JSON
readings and compact batch form as MQTT) into micro-batches; a batch lands through the same screening,
validation, calibration and quarantine as every source (`land_source_readings`), and only after that Delta
commit are the batch's offsets (highest offset + 1 per partition) committed to the group. A crash at any
point therefore leaves each message either in bronze or after the group's committed offset: the restarted
consumer reads it again, and bronze's upsert on the reading key turns the second copy into nothing.

- A poison message (not JSON, a malformed batch, a reading that fails a check) goes to
  `quarantine.sensor_readings` with its topic, partition and offset in the raw text, and its offset is
  committed with its batch: it never blocks its partition, and a redelivered copy upserts onto the same
  quarantine row (the record id hashes source and raw text).
- A rebalance (a member joins or leaves) first lands what is buffered and commits those offsets, then
  gives the partitions up: the next owner starts where this one stopped, nothing is lost.
- The broker going away: librdkafka reconnects by itself; an offset commit that fails is kept and retried
  (offsets only grow, so the newest covers the older ones). Readings already landed stay landed.

Batches commit in a worker thread while the poll loop decodes the next one (Delta I/O releases the GIL);
while a commit runs, the open batch keeps growing up to `batch_backlog_factor` x the count (group commit).

Metrics (Prometheus, `kafka.metrics_port`): consumer lag per partition (end offset - committed offset), the
readings landed (a counter) and the landed readings per second over the last batches.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa

from lakehouse.bronze import LandingResult
from lakehouse.sources.payload import Decoded, decode_message, encode_batch, encode_json, readings_table
from lakehouse.sources.screen import Rejected, land_source_readings
from wattflow.log import get_logger

log = get_logger(__name__)


class KafkaConnectionError(ConnectionError):
    """The brokers cannot be reached or refused the client."""


@dataclass
class KafkaBatch:
    """One committed micro-batch: what was landed and the offsets it moved (topic, partition) -> next offset."""

    messages: int
    readings: int
    result: LandingResult
    opened_at: float
    committed_at: float
    offsets: dict[tuple[str, int], int]
    # Per message: (topic, partition, offset, producer timestamp in s or None) - benchmarks pair them with commits.
    message_meta: list[tuple[str, int, int, float | None]] = field(default_factory=list, repr=False)


@dataclass
class KafkaStreamStats:
    messages: int = 0
    readings: int = 0  # reading records received (landed + quarantined)
    landed: int = 0
    quarantined: int = 0
    batches: int = 0
    rebalances: int = 0
    offset_commit_retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class IngestMetrics:
    """The consumer's Prometheus series, in a registry of their own (several consumers in one process)."""

    def __init__(self, group_id: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.group_id = group_id
        self.lag = Gauge("wattflow_kafka_consumer_lag", "Messages behind the partition's end (last committed offset).",
                         ["group", "topic", "partition"], registry=self.registry)
        self.landed = Counter("wattflow_kafka_readings_landed", "Readings landed in bronze.sensor_readings.",
                              ["group"], registry=self.registry)
        self.quarantined = Counter("wattflow_kafka_readings_quarantined", "Readings and messages sent to quarantine.",
                                   ["group"], registry=self.registry)
        self.rate = Gauge("wattflow_kafka_landed_readings_per_second", "Readings landed per second over the last batches.",
                          ["group"], registry=self.registry)
        self.commit_seconds = Gauge("wattflow_kafka_batch_commit_seconds", "Duration of the last Delta commit.",
                                    ["group"], registry=self.registry)
        self._window: deque[tuple[float, int]] = deque()

    def on_batch(self, landed: int, quarantined: int, commit_s: float, now: float, window_s: float = 10.0) -> None:
        self.landed.labels(self.group_id).inc(landed)
        self.quarantined.labels(self.group_id).inc(quarantined)
        self.commit_seconds.labels(self.group_id).set(commit_s)
        self._window.append((now, landed))
        while self._window and now - self._window[0][0] > window_s:
            self._window.popleft()
        span = max(now - self._window[0][0], commit_s, 1e-3) if len(self._window) > 1 else max(commit_s, 1e-3)
        self.rate.labels(self.group_id).set(sum(n for _, n in self._window) / span)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(self.group_id, topic, str(partition)).set(lag)

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)


@dataclass
class _Open:
    """The batch being filled by the poll loop."""

    decoded: list[Decoded] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    meta: list[tuple[str, int, int, float | None]] = field(default_factory=list)
    readings: int = 0
    messages: int = 0
    opened_at: float = 0.0

    @property
    def size(self) -> int:
        return self.readings + len(self.rejected)


def decode_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Decoded:
    """One Kafka record's readings: the key names the building, the position goes with every rejection.
    Shared by the consumer group here and the Spark Structured Streaming path (lakehouse.streaming)."""
    ids = {"building_id": key.decode("utf-8", "replace")} if key else {}
    return decode_message(value or b"", ids=ids, origin={"topic": topic, "partition": partition, "offset": offset})


def client_config(settings_kafka: Any, bootstrap: str | None = None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap or settings_kafka.bootstrap_servers, **settings_kafka.client_config}


class KafkaIngest:
    """Consume topics into bronze until `max_readings`, `idle_timeout` or `stop()`; `run()` in the calling thread."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        engine: Any,
        registry_loader: Callable[[], Any],
        batch_max_readings: int = 50_000,
        batch_max_age_s: float = 1.0,
        backlog_factor: int = 4,
        poll_max_messages: int = 2000,
        config: dict[str, Any] | None = None,
        source: str | None = None,
        on_commit: Callable[[KafkaBatch], None] | None = None,
        settings: Any | None = None,
        metrics: IngestMetrics | None = None,
        lag_interval_s: float = 1.0,
        instance_id: str = "",
        session_timeout_s: float = 45.0,
    ) -> None:
        from confluent_kafka import Consumer

        self.topics = list(topics)
        self.group_id = group_id
        self.engine = engine
        self.registry_loader = registry_loader
        self.batch_max_readings = batch_max_readings
        self.batch_max_age_s = batch_max_age_s
        self.backlog_factor = backlog_factor
        self.poll_max_messages = poll_max_messages
        # One source name per topic set, stable across restarts: quarantine ids hash it with the raw record.
        self.source = source or "kafka:" + ",".join(self.topics)
        self.on_commit = on_commit
        self.settings = settings
        self.metrics = metrics or IngestMetrics(group_id)
        self.stats = KafkaStreamStats()
        self._stop = threading.Event()
        self._open = _Open()
        self._landed: queue.SimpleQueue[dict[tuple[str, int], int]] = queue.SimpleQueue()
        self._to_commit: dict[tuple[str, int], int] = {}  # landed, not yet committed to the group
        self._next_commit_try = 0.0
        self._handoff: queue.Queue = queue.Queue(maxsize=1)
        self._worker_idle = threading.Event()
        self._failure: list[BaseException] = []
        self.assigned = threading.Event()
        self.lag_interval_s = lag_interval_s
        self._next_lag = 0.0
        self._committed: dict[tuple[str, int], int] = {}  # what the group has, as far as we committed it
        self._per_message = 1.0  # readings per message, a moving average (sizes the polls)
        conf = {
            "bootstrap.servers": bootstrap,
            **(config or {}),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Large fetches: a poll returns many messages, so the per-poll cost stays small.
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "error_cb": self._on_error,
            "session.timeout.ms": int(session_timeout_s * 1000),
        }
        if instance_id:
            conf["group.instance.id"] = instance_id
        self.consumer = Consumer(conf, logger=_RdkafkaLog())

    # --------------------------------------------------------------------------------- callbacks
    def _on_error(self, err) -> None:
        # Transport errors (the broker away) are retried by librdkafka; fatal ones stop the consumer.
        if err.fatal():
            self._failure.append(KafkaConnectionError(f"Kafka: {err.str()}"))
            self._stop.set()
        else:
            log.debug("kafka client error", error=err.str())

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned.set()
        log.info("kafka partitions assigned", partitions=[(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        """Before the partitions go: land what is buffered and commit every landed offset, so the next owner
        starts exactly after it. Runs in the poll thread (inside consume())."""
        self.stats.rebalances += 1
        self._drain_worker()
        if self._open.messages and not self._failure:
            batch, self._open = self._open, _Open()
            self._land(batch)
        self._collect_landed()
        self._commit_offsets(force=True)
        gone = {(p.topic, p.partition) for p in partitions}
        self._to_commit = {tp: o for tp, o in self._to_commit.items() if tp not in gone}
        log.info("kafka partitions revoked", partitions=sorted(gone))

    def _on_lost(self, consumer, partitions) -> None:
        """Partitions taken away without a revoke (session timed out): their offsets can no longer be
        committed by us; what is buffered is dropped (the next owner reads it again from the committed offset)."""
        gone = {(p.topic, p.partition) for p in partitions}
        self._to_commit = {tp: o for tp, o in self._to_commit.items() if tp not in gone}
        self._open = _Open()
        log.warning("kafka partitions lost", partitions=sorted(gone))

    # --------------------------------------------------------------------------------- running
    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_readings: int | None = None, idle_timeout: float | None = None) -> KafkaStreamStats:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        worker = threading.Thread(target=self._commit_worker, name="kafka-commit", daemon=True)
        worker.start()
        try:
            self._poll_loop(max_readings, idle_timeout)
            # Stopping: the open batch lands and its offsets are committed before the consumer leaves.
            if self._open.messages and not self._failure:
                self._handoff.put(self._open)
                self._open = _Open()
            self._drain_worker()
            self._collect_landed()
            self._final_commit()
        finally:
            self._handoff.put(None)
            worker.join()
            self.consumer.close()  # leaves the group (a revoke: nothing buffered any more)
        if self._failure:
            raise self._failure[0]
        return self.stats

    def _final_commit(self, timeout_s: float = 30.0) -> None:
        """Before leaving the group: commit every landed offset, retrying while the coordinator is away (a
        broker restart) so the next member does not read landed messages again. Messages polled meanwhile
        are not landed and not committed: the group reads them again later."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._commit_offsets(force=True)
            if not self._to_commit or self._failure or time.monotonic() >= deadline:
                return
            self.consumer.poll(0.2)  # serves the group protocol (rejoin, coordinator lookup)

    def _drain_worker(self) -> None:
        """Wait until the worker has landed everything handed to it (each item is marked done after landing)."""
        self._handoff.join()

    def _worker_busy(self) -> bool:
        return self._handoff.full() or not self._worker_idle.is_set()

    def _commit_worker(self) -> None:
        while True:
            self._worker_idle.set()
            batch = self._handoff.get()
            self._worker_idle.clear()
            try:
                if batch is None:
                    return
                if self._failure:
                    continue  # after a failed Delta commit nothing more lands or moves an offset
                self._land(batch)
            except BaseException as err:  # surfaced by run(); the batch's offsets stay uncommitted
                self._failure.append(err)
                self._stop.set()
            finally:
                self._handoff.task_done()
                if batch is None:
                    self._worker_idle.set()

    def _poll_loop(self, max_readings: int | None, idle_timeout: float | None) -> None:
        hard_cap = self.batch_max_readings * max(1, self.backlog_factor)
        submitted = 0
        last_message = time.monotonic()
        while not self._failure:
            self._collect_landed()
            self._commit_offsets()
            self._update_lag()
            b = self._open
            waiting = bool(b.messages) and self._worker_busy()
            limit = hard_cap if waiting else self.batch_max_readings
            timeout = 0.2
            if b.messages and not waiting:
                timeout = max(0.0, min(timeout, b.opened_at + self.batch_max_age_s - time.time()))
            elif waiting:
                timeout = 0.02
            if b.size < limit:
                # No more messages than the batch has room for (at the readings per message seen so far): a
                # poll of compact batches could otherwise bring a million readings into one batch.
                room = int((limit - b.size) / max(self._per_message, 1.0)) + 1
                messages = self.consumer.consume(num_messages=max(1, min(self.poll_max_messages, room)), timeout=timeout)
            else:
                time.sleep(timeout)
                messages = []
            for m in messages:
                if m.error() is not None:
                    if m.error().fatal():
                        raise KafkaConnectionError(f"Kafka: {m.error().str()}")
                    continue  # partition EOF and transient errors: nothing to land
                last_message = time.monotonic()
                self._add(m)
            b = self._open
            due = b.messages and (
                b.size >= self.batch_max_readings
                or time.time() - b.opened_at >= self.batch_max_age_s
                or self._stop.is_set()
                or (max_readings is not None and submitted + b.size >= max_readings)
            )
            must = b.messages and (b.size >= hard_cap or self._stop.is_set())
            if due and (must or not self._worker_busy()):
                self._handoff.put(b)
                submitted += b.size
                self._open = _Open()
            if not self._open.messages:
                if self._stop.is_set():
                    return
                if max_readings is not None and submitted >= max_readings:
                    return
                if not self.assigned.is_set():
                    last_message = time.monotonic()  # idle counts from the group's first assignment
                elif idle_timeout is not None and time.monotonic() - last_message >= idle_timeout:
                    return

    def _add(self, m) -> None:
        b = self._open
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        if not b.messages:
            b.opened_at = time.time()
        decoded = decode_record(topic, partition, offset, m.key(), m.value())
        if decoded.readings:
            b.decoded.append(decoded)
            b.readings += decoded.readings
        b.rejected.extend(decoded.rejected)
        b.messages += 1
        self._per_message += 0.05 * (decoded.readings + len(decoded.rejected) - self._per_message)
        b.offsets[(topic, partition)] = max(b.offsets.get((topic, partition), -1), offset + 1)
        kind, ts_ms = m.timestamp()
        b.meta.append((topic, partition, offset, ts_ms / 1000.0 if kind and ts_ms > 0 else None))

    def _land(self, b: _Open) -> None:
        started = time.time()
        result = land_source_readings(
            readings_table(b.decoded),
            source=self.source,
            registry=self.registry_loader(),
            engine=self.engine,
            pre_rejected=b.rejected,
            batch_id=f"{self.source}-{uuid.uuid4().hex[:12]}",
            now=datetime.now(timezone.utc),
            settings=self.settings,
        )
        committed_at = time.time()
        # Only now may the group move past these messages.
        self._landed.put(dict(b.offsets))
        s = self.stats
        s.messages += b.messages
        s.readings += result.received
        s.landed += result.landed
        s.quarantined += result.quarantined
        s.batches += 1
        for k, v in result.reasons.items():
            s.reasons[k] = s.reasons.get(k, 0) + v
        self.metrics.on_batch(result.landed, result.quarantined, committed_at - started, committed_at)
        log.debug("kafka batch committed", messages=b.messages, readings=result.received, landed=result.landed)
        if self.on_commit is not None:
            self.on_commit(KafkaBatch(b.messages, result.received, result, b.opened_at, committed_at, dict(b.offsets), b.meta))

    def _collect_landed(self) -> None:
        while True:
            try:
                offsets = self._landed.get_nowait()
            except queue.Empty:
                return
            for tp, o in offsets.items():
                self._to_commit[tp] = max(self._to_commit.get(tp, -1), o)

    def _commit_offsets(self, force: bool = False) -> None:
        """Commit landed offsets to the group (synchronously: a commit we believe done is done). A failure
        (broker away, coordinator moving) keeps them for the next try; the newest offset covers older ones."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self._to_commit or (not force and time.monotonic() < self._next_commit_try):
            return
        pending = dict(self._to_commit)
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in pending.items()], asynchronous=False)
        except KafkaException as err:
            self.stats.offset_commit_retries += 1
            self._next_commit_try = time.monotonic() + 0.5
            log.info("kafka offset commit failed; retrying", error=str(err.args[0]) if err.args else str(err))
            return
        for tp, o in pending.items():
            self._committed[tp] = o
            if self._to_commit.get(tp) == o:
                del self._to_commit[tp]
        self._update_lag(force=True)

    def _update_lag(self, force: bool = False) -> None:
        """Consumer lag per assigned partition: the partition's end (cached from fetch responses, no broker
        round trip) minus the offset the group has committed."""
        from confluent_kafka import KafkaException, TopicPartition

        now = time.monotonic()
        if not force and now < self._next_lag:
            return
        self._next_lag = now + self.lag_interval_s
        try:
            assignment = self.consumer.assignment()
        except (KafkaException, RuntimeError):
            return
        for tp in assignment:
            key = (tp.topic, tp.partition)
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            except KafkaException:
                continue
            if high >= 0 and key in self._committed:
                self.metrics.set_lag(tp.topic, tp.partition, max(0, high - self._committed[key]))


class _RdkafkaLog:
    """librdkafka's log lines into ours at debug level (a broker restart otherwise prints a line per retry)."""

    def log(self, level, msg, *args, **kwargs) -> None:
        log.debug("librdkafka", message=msg % args if args else msg)

    def __getattr__(self, name):  # debug/info/warning/error/exception/critical
        return lambda msg, *args, **kwargs: self.log(0, msg, *args)


def ingest_kafka(
    *,
    bootstrap: str | None = None,
    topic: str | None = None,
    group_id: str | None = None,
    max_readings: int | None = None,
    idle_timeout: float | None = None,
    batch_max_readings: int | None = None,
    batch_max_age_s: float | None = None,
    engine: Any | None = None,
    registry_file: Any = None,
    on_commit: Callable[[KafkaBatch], None] | None = None,
    settings: Any | None = None,
    metrics_port: int | None = None,
) -> KafkaStreamStats:
    """Consume the configured topic into bronze; settings give every default (`settings.kafka`)."""
    from pathlib import Path

    from lakehouse.engine import get_engine
    from lakehouse.sources.mqtt import registry_file_loader
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    k = settings.kafka
    topics = [t.strip() for t in (topic or k.topic).split(",") if t.strip()]
    metrics = IngestMetrics(group_id or k.group_id)
    port = k.metrics_port if metrics_port is None else metrics_port
    if port:
        metrics.serve(port, k.metrics_host)
    ingest = KafkaIngest(
        bootstrap=bootstrap or k.bootstrap_servers,
        topics=topics,
        group_id=group_id or k.group_id,
        engine=engine or get_engine(settings),
        registry_loader=registry_file_loader(Path(registry_file) if registry_file else None),
        batch_max_readings=batch_max_readings or k.batch_max_readings,
        batch_max_age_s=batch_max_age_s or k.batch_max_age_s,
        backlog_factor=k.batch_backlog_factor,
        poll_max_messages=k.poll_max_messages,
        config=k.client_config,
        on_commit=on_commit,
        settings=settings,
        metrics=metrics,
        instance_id=k.instance_id,
        session_timeout_s=k.session_timeout_s,
    )
    check_reachable(bootstrap or k.bootstrap_servers, k.client_config, k.connect_timeout_s)
    try:
        return ingest.run(max_readings=max_readings, idle_timeout=idle_timeout)
    except KeyboardInterrupt:  # Ctrl-C: what landed has its offsets committed; the group reads the rest again
        return ingest.stats


def check_reachable(bootstrap: str, config: dict[str, Any] | None = None, timeout_s: float = 30.0) -> None:
    """One clear error now when no broker answers, instead of a consumer that waits forever."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **(config or {}), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as err:
        raise KafkaConnectionError(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s ({err.args[0].str() if err.args else err}); "
            "check kafka.bootstrap_servers (WATTFLOW_KAFKA__BOOTSTRAP_SERVERS) or start one with `make up`"
        ) from None
    if not metadata.brokers:
        raise KafkaConnectionError(f"the Kafka cluster at {bootstrap} lists no brokers")


# ------------------------------------------------------------------------------------------- publishing


@dataclass
class KafkaPublishResult:
    messages: int
    readings: int
    acknowledged_messages: int
    acknowledged_readings: int
    failed_messages: int
    seconds: float


class KafkaPublisher:
    """An idempotent producer (acks=all: a message the broker acknowledges is in its log) that counts
    acknowledged readings. Keys are building ids, so one building's readings stay in order on one partition."""

    def __init__(self, bootstrap: str, *, config: dict[str, Any] | None = None, linger_ms: int = 20) -> None:
        from confluent_kafka import Producer

        self.acknowledged_messages = 0
        self.acknowledged_readings = 0
        self.failed_messages = 0
        self.errors: list[str] = []
        self.on_ack: Callable[[Any, int], None] | None = None
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                **(config or {}),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": linger_ms,
                "compression.type": "lz4",
                # Keep trying across a broker restart instead of failing messages after the default 5 minutes.
                "message.timeout.ms": 300_000,
            },
            logger=_RdkafkaLog(),
        )

    def publish(self, topic: str, key: str | None, payload: bytes, readings: int) -> None:
        def delivered(err, msg) -> None:
            if err is None:
                self.acknowledged_messages += 1
                self.acknowledged_readings += readings
                if self.on_ack is not None:
                    self.on_ack(msg, readings)
            else:
                self.failed_messages += 1
                self.errors.append(err.str())

        while True:
            try:
                self.producer.produce(topic, payload, key=key.encode() if key else None, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every delivery report; returns how many messages are still unacknowledged."""
        return self.producer.flush(timeout)

    def __enter__(self) -> "KafkaPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


@dataclass(frozen=True)
class KafkaMessage:
    key: str
    payload: bytes
    readings: int


def reading_messages(
    readings: pa.Table, *, readings_per_message: int = 500, payload_format: str = "batch"
) -> Iterator[KafkaMessage]:
    """Per building in time order, `readings_per_message` readings a message, keyed by building."""
    import pyarrow.compute as pc

    from lakehouse.sources.payload import READING_FIELDS

    table = readings.select([c for c in READING_FIELDS if c in readings.column_names])
    table = table.sort_by([("building_id", "ascending"), ("ts", "ascending"), ("sensor_id", "ascending")])
    buildings = table.column("building_id")
    for building in pc.unique(buildings).to_pylist():
        rows = table.filter(pc.equal(buildings, building))
        for start in range(0, rows.num_rows, readings_per_message):
            chunk = rows.slice(start, readings_per_message)
            if payload_format == "batch":
                payload = encode_batch(chunk, building_id=building)
            else:
                as_text = chunk.set_column(chunk.column_names.index("ts"), "ts",
                                           pc.strftime(chunk.column("ts"), format="%Y-%m-%dT%H:%M:%SZ"))
                payload = encode_json(as_text.to_pylist())
            yield KafkaMessage(building, payload, chunk.num_rows)


def publish_readings_kafka(
    readings: pa.Table,
    bootstrap: str,
    topic: str,
    *,
    rate: float | None = None,
    readings_per_message: int = 500,
    payload_format: str = "batch",
    config: dict[str, Any] | None = None,
    ack_timeout: float = 120.0,
) -> KafkaPublishResult:
    """Publish readings (the simulator's table or any bronze-shaped table) at `rate` readings/s (None: as fast as possible)."""
    start = time.monotonic()
    messages = sent = 0
    with KafkaPublisher(bootstrap, config=config) as pub:
        for msg in reading_messages(readings, readings_per_message=readings_per_message, payload_format=payload_format):
            pub.publish(topic, msg.key, msg.payload, msg.readings)
            messages += 1
            sent += msg.readings
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        pub.flush(ack_timeout)
        return KafkaPublishResult(messages, sent, pub.acknowledged_messages, pub.acknowledged_readings,
                                  pub.failed_messages, time.monotonic() - start)


# ------------------------------------------------------------------------------------------- forecasts


FORECAST_FORMAT = "wattflow.forecast/v1"


def forecast_messages(forecasts: Any) -> Iterator[KafkaMessage]:
    """One message per building and issue time (the `gold.forecasts` rows of a day-ahead forecast), keyed by
    building: applications that consume get the whole horizon at once, in order per building."""
    import pandas as pd

    frame = pd.DataFrame(forecasts)
    if frame.empty:
        return
    frame = frame.sort_values(["building_id", "issued_at", "ts"])

    def iso(t: Any) -> str:
        return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")

    def number(v: Any) -> float | None:
        return None if v is None or pd.isna(v) else float(v)

    for (building, issued_at), rows in frame.groupby(["building_id", "issued_at"], sort=False):
        first = rows.iloc[0]
        doc = {
            "format": FORECAST_FORMAT,
            "building_id": str(building),
            "issued_at": iso(issued_at),
            "model_name": str(first.get("model_name", "")),
            "model_version": str(first.get("model_version", "")),
            "is_fallback": bool(first.get("is_fallback", False)),
            "points": [
                {"ts": iso(r.ts), "horizon_h": int(r.horizon_h), "yhat": number(r.yhat), "yhat_p10": number(getattr(r, "yhat_p10", None)),
                 "yhat_p50": number(getattr(r, "yhat_p50", None)), "yhat_p90": number(getattr(r, "yhat_p90", None))}
                for r in rows.itertuples(index=False)
            ],
        }
        yield KafkaMessage(str(building), json.dumps(doc, separators=(",", ":")).encode(), len(rows))


def publish_forecasts(forecasts: Any, settings: Any | None = None, *, bootstrap: str | None = None, topic: str | None = None,
                      timeout_s: float = 60.0) -> int:
    """Publish day-ahead forecasts to `kafka.forecasts_topic`, one message per building and issue time, keyed
    by building; returns the messages the broker acknowledged (all of them, or KafkaConnectionError)."""
    if settings is None:
        from wattflow.settings import get_settings

        settings = get_settings()
    k = settings.kafka
    pub = KafkaPublisher(bootstrap or k.bootstrap_servers, config=k.client_config, linger_ms=5)
    sent = 0
    for msg in forecast_messages(forecasts):
        pub.publish(topic or k.forecasts_topic, msg.key, msg.payload, msg.readings)
        sent += 1
    left = pub.flush(timeout_s)
    if left or pub.failed_messages:
        raise KafkaConnectionError(
            f"{left + pub.failed_messages} of {sent} forecast messages were not acknowledged by {bootstrap or k.bootstrap_servers} "
            f"within {timeout_s:g} s ({'; '.join(pub.errors[:3]) or 'no answer'}); check kafka.bootstrap_servers"
        )
    return pub.acknowledged_messages
