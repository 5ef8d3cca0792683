"""An MQTT ingest process for the kill test: `python -m tests.integration.mqtt_consumer BROKER ROOT HOME`.

It consumes into a delta-rs lakehouse at ROOT with the test registry (one building) and prints one
line per committed batch, so the test knows when a kill lands between or inside commits.
"""

from __future__ import annotations

import sys
import threading
import time

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.sources.mqtt import MqttIngest
from tests.integration.stream_fixtures import small_registry
from wattflow.settings import Settings


def main(broker: str, root: str, home: str, idle_timeout: float) -> None:
    registry = small_registry(1)
    consumer = MqttIngest(
        broker=broker, topic="sites/+/buildings/+/sensors/#", client_id="wattflow-killable", engine=DeltaRsEngine(root),
        registry_loader=lambda: registry, batch_max_readings=100, batch_max_age_s=0.2, settings=Settings(home=home),
        on_commit=lambda b: print(f"commit {b.readings}", flush=True),
    )

    def announce() -> None:  # once subscribed, the broker queues every message for this session
        if consumer._connected.wait(30):
            time.sleep(0.3)
            print("connected", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    stats = consumer.run(idle_timeout=idle_timeout)
    print(f"done {stats.landed} {stats.quarantined}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
