"""BACnet/IP into bronze against simulated devices (bacpypes3's own server application on loopback addresses).

One simulated building's six sensors live on two devices (meters on 127.0.0.2, room sensors on 127.0.0.3),
each serving the simulator's values over real UDP; the poller reads them with ReadPropertyMultiple.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from lakehouse.buildings import BacnetPoint, BuildingRegistry
from lakehouse.engine import get_engine
from lakehouse.registry_file import save_registry
from lakehouse.schemas import QUARANTINE_READINGS, SENSOR_READINGS
from lakehouse.sources.bacnet import BacnetPoller, BronzeSink, KafkaSink, MqttSink, real32, registry_points
from lakehouse.sources.bacnet_device import UNIT_TO_BACNET, BmsSimulator, ObjectSpec
from lakehouse.sources.mqtt import MqttIngest
from tests.stand_ins.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

METERS, ROOMS = "127.0.0.2", "127.0.0.3"
# The register is served in watt-hours, as many meters count: the shared screen converts it to the sensor's kWh.
SERVED_IN = {"energy_cumulative": ("Wh", 1000.0)}


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def portfolio():
    from lakehouse.simulator import simulate_portfolio

    return simulate_portfolio(1, "2024-03-04", "2024-03-05", seed=7, interval_minutes=15)


class World:
    """The building's registry with BACnet points, and its two simulated devices."""

    def __init__(self, portfolio, bms: BmsSimulator) -> None:
        self.portfolio = portfolio
        self.bms = bms
        building = portfolio.registry.buildings[0]
        self.addresses = {METERS: f"{METERS}:{free_udp_port(METERS)}", ROOMS: f"{ROOMS}:{free_udp_port(ROOMS)}"}
        sensors, specs = [], {METERS: [], ROOMS: []}
        self.where: dict[str, tuple[str, str]] = {}  # sensor_id -> (device address, object)
        for i, s in enumerate(building.sensors):
            host = METERS if s.metric.startswith("energy") else ROOMS
            address = self.addresses[host]
            obj = f"analog-input,{i + 1}"
            unit = SERVED_IN.get(s.metric, (s.unit, 1.0))[0]
            specs[host].append(ObjectSpec(obj, s.sensor_id, UNIT_TO_BACNET[unit]))
            self.where[s.sensor_id] = (address, obj)
            instance = 1001 if host == METERS else 1002
            sensors.append(s.model_copy(update={"bacnet": BacnetPoint(address=address, device_instance=instance, object=obj)}))
        self.building = building.model_copy(update={"sensors": sensors})
        self.registry = BuildingRegistry(buildings=[self.building])
        for host, instance in ((METERS, 1001), (ROOMS, 1002)):
            bms.add_device(self.addresses[host], instance, specs[host])

    def serve(self, ts) -> dict[str, float]:
        """Set every object to the simulator's reading at `ts`; returns the raw readings by sensor."""
        r = self.portfolio.readings
        at = r.filter(pc.equal(r.column("ts"), pa.scalar(ts, r.column("ts").type)))
        raw = dict(zip(at.column("sensor_id").to_pylist(), at.column("value").to_pylist()))
        metric = {s.sensor_id: s.metric for s in self.building.sensors}
        self.bms.set_values({self.where[sid]: v * SERVED_IN.get(metric[sid], (None, 1.0))[1] for sid, v in raw.items()})
        return raw

    def timestamps(self, n: int) -> list[datetime]:
        return sorted(set(self.portfolio.readings.column("ts").to_pylist()))[20 : 20 + n]

    def poller(self, **kw) -> BacnetPoller:
        kw.setdefault("request_timeout_s", 0.5)
        kw.setdefault("request_retries", 0)
        return BacnetPoller(registry_points(self.registry), local_address=f"127.0.0.1:{free_udp_port('127.0.0.1')}",
                            device_instance=599999, **kw)


@pytest.fixture
def world(portfolio, wattflow_home: Path):
    with BmsSimulator() as bms:
        w = World(portfolio, bms)
        save_registry(w.registry)  # the registry file the sinks and the CLI load
        yield w


def _poll_each(world: World, sink, timestamps, between=None):
    """Poll once per timestamp (the devices serving that timestamp's readings) and send each poll."""
    out = []

    async def main():
        async with world.poller() as poller:
            for i, ts in enumerate(timestamps):
                if between is not None:
                    between(i)
                world.serve(ts)
                poll = await poller.poll(ts)
                out.append((poll, await asyncio.to_thread(sink.send, poll.records)))
            return poller

    poller = asyncio.run(main())
    return poller, out


def _expected(world: World, raw: dict[str, float], sensor_id: str) -> float:
    s = world.building.sensor(sensor_id)
    factor = SERVED_IN.get(s.metric, (None, 1.0))[1]
    return real32(raw[sensor_id] * factor) / factor * s.scale + s.offset


def test_polled_points_land_in_bronze_with_the_sensors_units(world: World) -> None:
    engine = get_engine()
    sink = BronzeSink(engine=engine, registry_loader=lambda: world.registry, settings=None)
    timestamps = world.timestamps(3)
    served = {}

    def between(i: int) -> None:
        served[i] = world.serve(timestamps[i])
        if i == 2:  # the CO2 object re-commissioned in percent: not the sensor's ppm
            world.bms.set_units(*world.where["b01-co2"], "percent")

    poller, polls = _poll_each(world, sink, timestamps, between)

    assert [len(p.records) for p, _ in polls] == [6, 6, 6]
    assert [s.landed for _, s in polls] == [6, 6, 5]
    landed = engine.read(SENSOR_READINGS).sort_by([("ts", "ascending"), ("sensor_id", "ascending")]).to_pylist()
    assert len(landed) == 17
    units = {s.sensor_id: s.unit for s in world.building.sensors}
    for row in landed:
        i = timestamps.index(row["ts"])
        assert row["unit"] == units[row["sensor_id"]]
        assert row["value"] == pytest.approx(_expected(world, served[i], row["sensor_id"]), rel=1e-6, abs=1e-9)
        assert row["source"] == "bacnet"
    # single precision lands as the decimal the device meant: the temperature has at most the simulator's digits
    temp = [r["value"] for r in landed if r["sensor_id"] == "b01-temp"]
    assert temp == [round(v, 3) for v in temp]

    quarantined = engine.read(QUARANTINE_READINGS).to_pylist()
    assert [(q["sensor_id"], q["check_name"]) for q in quarantined] == [("b01-co2", "unit_mismatch")]
    assert "field 'unit'" in quarantined[0]["reason"] and "'%'" in quarantined[0]["reason"] and "'ppm'" in quarantined[0]["reason"]
    [problem] = polls[2][0].problems
    assert (problem.sensor_id, problem.field, problem.value) == ("b01-co2", "units", "percent")
    assert "Remedy" in problem.message and "'ppm'" in problem.message and "analog-input,6" in problem.message
    assert 'wattflow_bacnet_point_problems_total{device="device 1002 at %s",field="units"} 1.0' % world.addresses[ROOMS] \
        in poller.metrics.text()

    # a re-poll of the same slot (a restarted poller) changes nothing in bronze
    version = engine.version(SENSOR_READINGS)
    world.bms.set_units(*world.where["b01-co2"], "parts-per-million")
    _poll_each(world, sink, timestamps[:1])
    assert engine.read(SENSOR_READINGS).num_rows == 17
    assert engine.version(SENSOR_READINGS) in (version, version + 1)
    assert engine.read(SENSOR_READINGS).sort_by([("ts", "ascending"), ("sensor_id", "ascending")]).to_pylist()[:6] == landed[:6]


def test_a_device_that_stops_answering_is_reported_and_the_rest_go_on(world: World) -> None:
    engine = get_engine()
    sink = BronzeSink(engine=engine, registry_loader=lambda: world.registry, settings=None)
    timestamps = world.timestamps(3)
    rooms = world.addresses[ROOMS]

    def between(i: int) -> None:
        if i == 1:
            world.bms.stop_device(rooms)
        if i == 2:
            world.bms.start_device(rooms)

    poller, polls = _poll_each(world, sink, timestamps, between)

    assert [len(p.records) for p, _ in polls] == [6, 2, 6]  # the meters' two points while the room device is away
    assert polls[1][0].down == [f"device 1002 at {rooms}"] and polls[0][0].down == polls[2][0].down == []
    health = poller.health[rooms]
    assert (health.polls, health.answered, health.failed, health.up) == (3, 2, 1, True)
    assert health.last_error == "abort: no-response"
    assert poller.health[world.addresses[METERS]].failed == 0
    metrics = poller.metrics.text()
    assert f'wattflow_bacnet_polls_total{{device="device 1002 at {rooms}",outcome="failed"}} 1.0' in metrics
    assert f'wattflow_bacnet_device_up{{device="device 1002 at {rooms}"}} 1.0' in metrics
    per_ts = pc.value_counts(engine.read(SENSOR_READINGS).column("ts")).to_pylist()
    assert sorted((c["values"], c["counts"]) for c in per_ts) == [(timestamps[0], 6), (timestamps[1], 2), (timestamps[2], 6)]


def test_a_device_at_the_address_that_is_not_the_registrys_is_not_read(world: World) -> None:
    rooms = world.addresses[ROOMS]
    sensors = [s.model_copy(update={"bacnet": s.bacnet.model_copy(update={"device_instance": 1003})})
               if s.bacnet.address == rooms else s for s in world.building.sensors]
    world.registry = BuildingRegistry(buildings=[world.building.model_copy(update={"sensors": sensors})])

    async def main():
        async with world.poller() as poller:
            world.serve(world.timestamps(1)[0])
            return poller, await poller.poll(world.timestamps(1)[0])

    poller, poll = asyncio.run(main())
    assert len(poll.records) == 2 and poll.down == [f"device 1003 at {rooms}"]  # only the meters' device is read
    assert poller.health[rooms].last_error.startswith(f"the device at {rooms} is not device 1003 (object: unknown-object)")


def test_bacnet_to_mqtt_to_bronze(world: World, tmp_path: Path) -> None:
    engine = get_engine()
    timestamps = world.timestamps(2)
    with Mosquitto(tmp_path / "mosquitto") as broker:
        consumer = MqttIngest(broker=broker.address, topic="sites/+/buildings/+/sensors/#", client_id="bacnet-test",
                              engine=engine, registry_loader=lambda: world.registry, batch_max_age_s=0.2)
        stats = {}
        worker = threading.Thread(target=lambda: stats.update(s=consumer.run(max_readings=12, idle_timeout=20)))
        worker.start()
        assert consumer._connected.wait(10)
        sink = MqttSink(broker=broker.address, site_of={"b01": world.building.site_id})
        try:
            _, polls = _poll_each(world, sink, timestamps)
        finally:
            sink.close()
        worker.join(30)
        assert not worker.is_alive()
    assert [s.sent for _, s in polls] == [6, 6]
    assert stats["s"].landed == 12
    landed = engine.read(SENSOR_READINGS).to_pylist()
    assert len(landed) == 12 and {r["source"] for r in landed} == {f"mqtt:{broker.address}"}
    units = {s.sensor_id: s.unit for s in world.building.sensors}
    assert all(r["unit"] == units[r["sensor_id"]] for r in landed)
    register = [r["value"] for r in landed if r["sensor_id"] == "b01-elec-reg"]
    raw = world.portfolio.readings.filter(pc.equal(world.portfolio.readings.column("sensor_id"), "b01-elec-reg"))
    want = [v for t, v in zip(raw.column("ts").to_pylist(), raw.column("value").to_pylist()) if t in timestamps]
    assert sorted(register) == pytest.approx(sorted(want), rel=1e-6)  # served in Wh, landed in kWh


def test_bacnet_to_kafka_to_bronze(world: World, kafka_broker, kafka_topic) -> None:
    """End to end: the simulated devices, the poller, the sensor topic, the consumer group, bronze."""
    from lakehouse.sources.kafka import KafkaIngest

    engine = get_engine()
    topic = kafka_topic(partitions=3)
    timestamps = world.timestamps(2)
    sink = KafkaSink(bootstrap=kafka_broker.address, topic=topic)
    try:
        _, polls = _poll_each(world, sink, timestamps)
    finally:
        sink.close()
    assert [s.sent for _, s in polls] == [6, 6] and sink.publisher.acknowledged_readings == 12
    consumer = KafkaIngest(bootstrap=kafka_broker.address, topics=[topic], group_id=f"{topic}-ingest", engine=engine,
                           registry_loader=lambda: world.registry)
    stats = consumer.run(idle_timeout=3)
    assert (stats.landed, stats.quarantined) == (12, 0)
    landed = engine.read(SENSOR_READINGS).sort_by([("ts", "ascending"), ("sensor_id", "ascending")]).to_pylist()
    assert len(landed) == 12 and {r["source"] for r in landed} == {f"kafka:{topic}"}
    units = {s.sensor_id: s.unit for s in world.building.sensors}
    served = {ts: dict(zip(*_raw_at(world, ts))) for ts in timestamps}
    for row in landed:
        assert row["unit"] == units[row["sensor_id"]]  # the register travelled in Wh and landed in kWh
        assert row["value"] == pytest.approx(_expected(world, served[row["ts"]], row["sensor_id"]), rel=1e-6, abs=1e-9)


def _raw_at(world: World, ts):
    r = world.portfolio.readings
    at = r.filter(pc.equal(r.column("ts"), pa.scalar(ts, r.column("ts").type)))
    return at.column("sensor_id").to_pylist(), at.column("value").to_pylist()


def test_cli_polls_on_its_interval_and_prints_the_devices(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from wattflow.cli import app
    from wattflow.settings import reset_settings

    monkeypatch.setenv("WATTFLOW_BACNET__LOCAL_ADDRESS", f"127.0.0.1:{free_udp_port('127.0.0.1')}")
    monkeypatch.setenv("WATTFLOW_BACNET__REQUEST_TIMEOUT_S", "0.5")
    reset_settings()
    world.serve(world.timestamps(1)[0])
    world.bms.stop_device(world.addresses[ROOMS])
    result = CliRunner().invoke(app, ["ingest", "bacnet", "--polls", "2", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    assert "2 polls, 4 readings read, 4 sent: 4 landed, 0 quarantined" in result.output
    assert f"device 1002 at {world.addresses[ROOMS]}" in result.output and "DOWN" in result.output
    # stamped with their slots on the 0.5 s grid (a poll that waits out the absent device overruns a slot: skipped)
    slots = sorted(set(get_engine().read(SENSOR_READINGS).column("ts").to_pylist()))
    assert len(slots) == 2 and all(t.microsecond % 500_000 == 0 for t in slots) and slots[1] > slots[0]

    save_registry(BuildingRegistry(buildings=[world.portfolio.registry.buildings[0]]))  # no BACnet points
    result = CliRunner().invoke(app, ["ingest", "bacnet", "--polls", "1"])
    assert result.exit_code == 1
    assert "no sensor in the registry has a 'bacnet' mapping" in result.output and "Traceback" not in result.output
