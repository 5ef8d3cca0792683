"""Simulated BACnet/IP devices: bacpypes3's own server application, serving values we set (demos, tests).

`BmsSimulator` runs any number of devices on one asyncio loop in a background thread, each on its own
address (a loopback address such as 127.0.0.2 with its own port), so a poller in the calling thread or
process talks to them over real UDP exactly as it would to a building's controllers. A device can be
taken off the network (`stop_device`: its socket closes, requests go unanswered) and brought back.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

# The registry's units -> the BACnet engineering unit a device would report for them.
UNIT_TO_BACNET: dict[str, str] = {
    "kWh": "kilowatt-hours",
    "Wh": "watt-hours",
    "MWh": "megawatt-hours",
    "degC": "degrees-celsius",
    "degF": "degrees-fahrenheit",
    "K": "degrees-kelvin",
    "%": "percent-relative-humidity",
    "ppm": "parts-per-million",
    "people": "no-units",
}


@dataclass(frozen=True)
class ObjectSpec:
    object: str  # "analog-input,3"
    name: str  # objectName, unique in the device
    units: str  # BACnet engineering unit, e.g. "kilowatt-hours"
    value: float = 0.0


def _object_class(kind: str) -> Any:
    from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObject

    classes = {"analog-input": AnalogInputObject, "analog-value": AnalogValueObject, "analog-output": AnalogOutputObject}
    if kind not in classes:
        raise ValueError(f"object type {kind!r}: the simulated device serves {', '.join(classes)}")
    return classes[kind]


class _Device:
    def __init__(self, address: str, instance: int, objects: list[ObjectSpec]) -> None:
        self.address, self.instance, self.specs = address, instance, objects
        self.app: Any = None
        self.objects: dict[str, Any] = {}
        self.values = {o.object: o.value for o in objects}

    async def start(self) -> None:
        from bacpypes3.app import Application

        from lakehouse.sources.bacnet import wait_bound

        from bacpypes3.local.device import DeviceObject
        from bacpypes3.local.networkport import NetworkPortObject

        device = DeviceObject(objectIdentifier=("device", self.instance), objectName=f"sim-device-{self.instance}",
                              vendorIdentifier=999)
        port = NetworkPortObject(self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
                                 networkNumber=0, networkNumberQuality="unknown")
        self.objects = {}
        objs = []
        for spec in self.specs:
            kind, _, number = spec.object.partition(",")
            obj = _object_class(kind)(
                objectIdentifier=(kind, int(number)), objectName=spec.name, presentValue=self.values[spec.object],
                units=spec.units, statusFlags=[0, 0, 0, 0], eventState="normal", outOfService=False,
            )
            self.objects[spec.object] = obj
            objs.append(obj)
        self.app = Application.from_object_list([device, port, *objs])
        await wait_bound(self.app, timeout_s=10.0)

    def stop(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def set_units(self, obj: str, units: str) -> None:
        self.objects[obj].units = units

    def set(self, obj: str, value: float) -> None:
        self.values[obj] = value
        if obj in self.objects:
            self.objects[obj].presentValue = value


class BmsSimulator:
    """Devices on a private asyncio loop in a daemon thread; every method is called from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bms-simulator", daemon=True)
        self.devices: dict[str, _Device] = {}

    def __enter__(self) -> "BmsSimulator":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for address in list(self.devices):
            self.stop_device(address)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, fn, *args) -> Any:
        async def run():
            out = fn(*args)
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def add_device(self, address: str, instance: int, objects: list[ObjectSpec]) -> None:
        """Start a device at `address` (``host:port``) serving `objects`."""
        device = _Device(address, instance, objects)
        self._call(device.start)
        self.devices[address] = device

    def set_values(self, values: dict[tuple[str, str], float]) -> None:
        """Present values by (device address, object)."""

        def apply() -> None:
            for (address, obj), value in values.items():
                self.devices[address].set(obj, value)

        self._call(apply)

    def set_units(self, address: str, obj: str, units: str) -> None:
        """Re-commission an object with other units (what a BMS integrator may do while we poll)."""
        self._call(self.devices[address].set_units, obj, units)

    def stop_device(self, address: str) -> None:
        """Take the device off the network: its socket closes and requests to it go unanswered."""
        self._call(self.devices[address].stop)

    def start_device(self, address: str) -> None:
        """Bring a stopped device back on the same address, serving its last values."""
        self._call(self.devices[address].start)
