"""The simulator's catalogue: sites (climate, location, grid) and building use types (load and schedules).

These are archetype parameters of the synthetic world, not platform policy: they describe the buildings
the simulator pretends to meter. Loads are in W per m2 of floor area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Site:
    site_id: str
    city: str
    country: str
    timezone: str
    latitude: float
    longitude: float
    mean_temperature_c: float  # annual mean
    seasonal_amplitude_c: float  # half the July-January difference
    diurnal_amplitude_c: float  # half the clear-day max-min difference
    synoptic_sd_c: float  # day-to-day weather variability
    mean_wind_ms: float
    dew_point_depression_c: float  # typical T - Td: larger in dry climates
    grid_emission_factor_kg_per_kwh: float
    tariff_per_kwh: float
    currency: str


SITES: tuple[Site, ...] = (
    Site("berlin", "Berlin", "DE", "Europe/Berlin", 52.52, 13.40, 10.3, 9.6, 4.5, 3.0, 3.8, 4.0, 0.38, 0.32, "EUR"),
    Site("london", "London", "GB", "Europe/London", 51.51, -0.13, 11.6, 6.8, 4.0, 2.5, 4.5, 3.0, 0.21, 0.28, "GBP"),
    Site("new_york", "New York", "US", "America/New_York", 40.71, -74.01, 13.2, 12.3, 4.8, 3.5, 4.2, 5.0, 0.27, 0.22, "USD"),
    Site("paris", "Paris", "FR", "Europe/Paris", 48.86, 2.35, 12.4, 8.0, 5.0, 2.8, 3.6, 4.0, 0.06, 0.25, "EUR"),
    Site("madrid", "Madrid", "ES", "Europe/Madrid", 40.42, -3.70, 15.0, 10.0, 6.5, 2.5, 2.8, 8.0, 0.15, 0.24, "EUR"),
)


@dataclass(frozen=True)
class UseType:
    name: str
    base_w_m2: float  # always-on load: servers, fridges, ventilation minimum
    occupied_w_m2: float  # lighting and plug load at full occupancy
    heating_w_m2_k: float  # heating power per kelvin below the heating balance point (heat pumps: electric)
    cooling_w_m2_k: float  # cooling power per kelvin above the cooling balance point
    heating_balance_c: float
    cooling_balance_c: float
    setback: float  # HVAC share kept when the building is empty
    people_per_m2: float  # at full occupancy
    floor_area_range_m2: tuple[float, float]
    # Occupancy fraction over the local day: (hours, fractions) for weekdays, Saturdays, Sundays/holidays.
    weekday: tuple[tuple[float, ...], tuple[float, ...]]
    saturday: tuple[tuple[float, ...], tuple[float, ...]]
    sunday: tuple[tuple[float, ...], tuple[float, ...]]
    summer_break: bool = False  # schools: weeks of closure in July/August


_CLOSED = ((0.0, 24.0), (0.02, 0.02))

USE_TYPES: dict[str, UseType] = {
    u.name: u
    for u in (
        UseType(
            "office", 4.0, 14.0, 1.1, 1.5, 15.0, 20.0, 0.35, 0.06, (2_000, 12_000),
            weekday=((0, 6, 7, 9, 12, 13, 17, 19, 21, 24), (0.02, 0.02, 0.15, 0.9, 0.9, 0.7, 0.85, 0.25, 0.05, 0.02)),
            saturday=((0, 8, 10, 14, 16, 24), (0.02, 0.02, 0.08, 0.08, 0.02, 0.02)),
            sunday=_CLOSED,
        ),
        UseType(
            "retail", 6.0, 20.0, 0.9, 1.9, 14.0, 19.0, 0.3, 0.12, (800, 6_000),
            weekday=((0, 8, 9, 12, 18, 20, 21, 24), (0.02, 0.05, 0.5, 0.8, 1.0, 0.6, 0.05, 0.02)),
            saturday=((0, 8, 9, 12, 16, 20, 21, 24), (0.02, 0.05, 0.6, 1.0, 1.0, 0.5, 0.05, 0.02)),
            sunday=((0, 10, 11, 17, 18, 24), (0.02, 0.02, 0.35, 0.35, 0.02, 0.02)),
        ),
        UseType(
            "school", 3.0, 11.0, 1.2, 0.9, 15.0, 22.0, 0.3, 0.25, (3_000, 10_000),
            weekday=((0, 7, 8, 12, 13, 15, 16, 17, 24), (0.01, 0.01, 0.95, 0.95, 0.8, 0.9, 0.2, 0.03, 0.01)),
            saturday=_CLOSED,
            sunday=_CLOSED,
            summer_break=True,
        ),
        UseType(
            "hospital", 16.0, 10.0, 1.4, 1.7, 16.0, 21.0, 1.0, 0.04, (8_000, 30_000),
            weekday=((0, 6, 8, 12, 18, 21, 24), (0.55, 0.55, 0.95, 1.0, 0.9, 0.65, 0.55)),
            saturday=((0, 8, 12, 18, 24), (0.55, 0.75, 0.8, 0.75, 0.55)),
            sunday=((0, 8, 12, 18, 24), (0.55, 0.7, 0.75, 0.7, 0.55)),
        ),
        UseType(
            "residential", 2.5, 7.0, 1.0, 0.7, 16.0, 23.0, 0.8, 0.03, (1_500, 8_000),
            weekday=((0, 6, 7, 9, 16, 18, 22, 24), (0.95, 0.95, 0.85, 0.35, 0.35, 0.85, 0.95, 0.95)),
            saturday=((0, 8, 10, 18, 22, 24), (0.95, 0.9, 0.65, 0.75, 0.95, 0.95)),
            sunday=((0, 8, 10, 18, 22, 24), (0.95, 0.9, 0.7, 0.8, 0.95, 0.95)),
        ),
    )
}
USE_TYPE_ORDER: tuple[str, ...] = ("office", "retail", "school", "hospital", "residential")


def occupancy_fraction(
    use: UseType, local_hour: np.ndarray, weekday: np.ndarray, is_holiday: np.ndarray, day_of_year: np.ndarray
) -> np.ndarray:
    """Share of peak occupancy for each interval, from the building's local clock and calendar."""
    weekday_frac = np.interp(local_hour, *use.weekday)
    saturday_frac = np.interp(local_hour, *use.saturday)
    sunday_frac = np.interp(local_hour, *use.sunday)
    frac = np.where(weekday == 5, saturday_frac, np.where(weekday == 6, sunday_frac, weekday_frac))
    closed = is_holiday
    if use.summer_break:
        closed = closed | ((day_of_year >= 196) & (day_of_year <= 236))
    return np.where(closed, sunday_frac, frac)
