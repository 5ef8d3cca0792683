"""`make demo`: run the platform's main job on embedded defaults and print where to look."""

from __future__ import annotations

from datetime import date, timedelta

from wattflow.settings import get_settings

# The demo's portfolio: small enough for a laptop, long enough to span both DST switches of spring 2024.
DEMO_BUILDINGS = 3
DEMO_START = date(2024, 3, 4)
DEMO_WEEKS = 8


def main() -> None:
    from lakehouse.simulator.commands import print_summary
    from lakehouse.simulator.commands_core import run_simulation

    settings = get_settings()
    print(f"wattflow home: {settings.home.resolve()}")
    print(f"lakehouse:     {settings.lakehouse_uri} (engine {settings.lakehouse.engine})")
    print(f"simulating {DEMO_BUILDINGS} buildings x {DEMO_WEEKS} weeks from {DEMO_START} with faults, landing in bronze")
    summary = run_simulation(
        buildings=DEMO_BUILDINGS,
        start=DEMO_START.isoformat(),
        end=(DEMO_START + timedelta(weeks=DEMO_WEEKS)).isoformat(),
        faults=True,
        settings=settings,
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
