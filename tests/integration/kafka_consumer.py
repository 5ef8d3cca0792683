"""A Kafka ingest process for the kill test: `python -m tests.integration.kafka_consumer BOOTSTRAP TOPIC GROUP ROOT HOME IDLE`.

It consumes into a delta-rs lakehouse at ROOT with the test registry (two buildings) and prints one line
when the group assigns it partitions and one per committed batch, so the test knows when a kill lands
inside the stream.
"""

from __future__ import annotations

import sys

from lakehouse.delta_rs import DeltaRsEngine
from lakehouse.sources.kafka import KafkaIngest
from tests.integration.stream_fixtures import small_registry
from wattflow.settings import Settings


def main(bootstrap: str, topic: str, group: str, root: str, home: str, idle_timeout: float) -> None:
    registry = small_registry(2)
    consumer = KafkaIngest(
        bootstrap=bootstrap, topics=[topic], group_id=group, engine=DeltaRsEngine(root), registry_loader=lambda: registry,
        batch_max_readings=300, batch_max_age_s=0.2, settings=Settings(home=home),
        on_commit=lambda b: print(f"commit {b.readings}", flush=True),
        # Static membership: the restarted process takes the killed one's partitions at once, without
        # waiting out the dead member's session.
        instance_id="kill-test", session_timeout_s=10.0,
    )
    original = consumer._on_assign

    def announce(c, partitions) -> None:
        original(c, partitions)
        print("assigned", flush=True)

    consumer._on_assign = announce
    stats = consumer.run(idle_timeout=idle_timeout)
    print(f"done {stats.landed} {stats.quarantined}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
