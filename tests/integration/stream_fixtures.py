"""Shared pieces of the source tests: a small registry and deterministic readings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse.buildings import Building, BuildingRegistry, Sensor

SENSORS = (("main_meter", "energy", "kWh"), ("zone_temp", "indoor_temperature", "degC"))


def small_registry(n_buildings: int = 2) -> BuildingRegistry:
    return BuildingRegistry(
        buildings=[
            Building(
                building_id=f"b{i}",
                name=f"Building {i}",
                site_id="site-a",
                timezone="Europe/Brussels",
                country="BE",
                use_type="office",
                floor_area_m2=2000.0,
                latitude=50.85,
                longitude=4.35,
                grid_emission_factor_kg_per_kwh=0.17,
                tariff_per_kwh=0.25,
                currency="EUR",
                sensors=[Sensor(sensor_id=s, metric=m, unit=u) for s, m, u in SENSORS],
            )
            for i in range(n_buildings)
        ]
    )


def readings_table(n_buildings: int, periods: int, start: str = "2026-01-05", freq: str = "15min") -> pa.Table:
    ts = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    blocks = []
    for i in range(n_buildings):
        for k, (sensor, metric, unit) in enumerate(SENSORS):
            values = (np.arange(periods) % 96) / 10.0 + i + (20.0 if metric == "indoor_temperature" else 0.0) + k / 100
            blocks.append(
                pa.table(
                    {
                        "building_id": [f"b{i}"] * periods,
                        "sensor_id": [sensor] * periods,
                        "metric": [metric] * periods,
                        "ts": pa.array(ts.to_numpy(), pa.timestamp("us", tz="UTC")),
                        "value": values,
                        "unit": [unit] * periods,
                    }
                )
            )
    return pa.concat_tables(blocks)
