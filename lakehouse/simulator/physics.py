"""One building's true behaviour on the meter grid: load, indoor climate, occupancy, CO2.

Electric load = floor area x (base load + occupancy-driven lighting/plugs + HVAC) x slow noise, where
HVAC is heating below and cooling above the use type's balance points of an effective outdoor
temperature that includes solar gains, throttled back to a setback share when the building is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from lakehouse.simulator.sites import UseType, occupancy_fraction
from lakehouse.simulator.weather import SiteWeather, ar1, recursive_filter, saturation_vapour_pressure_hpa

SOLAR_GAIN_K_PER_WM2 = 0.006  # effective warming of the envelope per W/m2 of global irradiance


@dataclass
class Calendar:
    local_hour: np.ndarray  # fractional hour on the building's wall clock
    weekday: np.ndarray  # 0 = Monday
    day_of_year: np.ndarray
    local_date: np.ndarray  # datetime64[D]
    is_holiday: np.ndarray


def local_calendar(ts_us: np.ndarray, timezone: str, country: str) -> Calendar:
    import holidays

    local = pd.DatetimeIndex(pd.to_datetime(ts_us, unit="us", utc=True)).tz_convert(timezone)
    local_date = local.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    years = range(int(local.year.min()), int(local.year.max()) + 1)
    try:
        days = holidays.country_holidays(country, years=years)
        holiday_dates = np.array(sorted(days.keys()), dtype="datetime64[D]")
    except NotImplementedError:
        holiday_dates = np.array([], dtype="datetime64[D]")
    return Calendar(
        local_hour=(local.hour + local.minute / 60.0).to_numpy(dtype=np.float64),
        weekday=local.weekday.to_numpy(),
        day_of_year=local.dayofyear.to_numpy(),
        local_date=local_date,
        is_holiday=np.isin(local_date, holiday_dates),
    )


def _smooth(x: np.ndarray, tau_intervals: float) -> np.ndarray:
    """First-order lag (thermal or air mass), starting settled at the first value."""
    a = float(np.exp(-1.0 / max(tau_intervals, 1e-6)))
    return recursive_filter((1 - a) * x, a, float(x[0]))


@dataclass
class BuildingTruth:
    energy_kwh: np.ndarray  # per interval, including any injected after-hours waste
    baseline_energy_kwh: np.ndarray  # the same without the waste
    hvac_kwh: np.ndarray
    occupancy_fraction: np.ndarray
    occupancy_people: np.ndarray
    indoor_temperature_c: np.ndarray
    indoor_humidity_pct: np.ndarray
    co2_ppm: np.ndarray
    outdoor_temperature_c: np.ndarray


def simulate_building(
    *,
    use: UseType,
    floor_area_m2: float,
    ts_us: np.ndarray,
    interval_minutes: int,
    calendar: Calendar,
    weather: SiteWeather,
    rng: np.random.Generator,
    hvac_factor: np.ndarray,
    occupancy_factor: np.ndarray,
    waste_w: np.ndarray,
) -> BuildingTruth:
    n = len(ts_us)
    per_hour = 60.0 / interval_minutes
    hours = interval_minutes / 60.0
    outdoor = weather.at(ts_us, "temperature_c")
    solar = weather.at(ts_us, "solar_radiation_wm2")
    outdoor_rh = weather.at(ts_us, "relative_humidity_pct")

    occ = occupancy_fraction(use, calendar.local_hour, calendar.weekday, calendar.is_holiday, calendar.day_of_year)
    occ = np.clip(occ * occupancy_factor * (1 + ar1(rng, n, np.exp(-1 / (2 * per_hour)), 0.08)), 0.0, 1.2)

    effective = outdoor + SOLAR_GAIN_K_PER_WM2 * solar
    heating = use.heating_w_m2_k * np.clip(use.heating_balance_c - effective, 0, None)
    cooling = use.cooling_w_m2_k * np.clip(effective - use.cooling_balance_c, 0, None)
    running = use.setback + (1 - use.setback) * np.clip(occ / 0.3, 0, 1)
    hvac_w_m2 = (heating + cooling) * running * hvac_factor
    plug_w_m2 = use.base_w_m2 + use.occupied_w_m2 * occ
    noise = 1 + ar1(rng, n, np.exp(-1 / (3 * per_hour)), 0.04) + 0.015 * rng.standard_normal(n)
    power_w = floor_area_m2 * (plug_w_m2 + hvac_w_m2) * np.clip(noise, 0.5, None)
    baseline = np.round(power_w / 1000 * hours, 3)
    energy = np.round((power_w + waste_w) / 1000 * hours, 3)
    hvac_kwh = floor_area_m2 * hvac_w_m2 * np.clip(noise, 0.5, None) / 1000 * hours

    occupied = occ > 0.15
    heating_mode = effective < use.heating_balance_c + 2
    cooling_mode = effective > use.cooling_balance_c
    target = np.select(
        [heating_mode, cooling_mode],
        [np.where(occupied, 21.5, 17.5), np.where(occupied, 24.0, np.minimum(27.0, effective))],
        default=20.0 + 0.3 * (effective - use.heating_balance_c),
    )
    indoor = _smooth(target, 2 * per_hour) + 0.12 * rng.standard_normal(n)
    vapour = outdoor_rh / 100 * saturation_vapour_pressure_hpa(outdoor) + 4.0 * occ
    indoor_rh = np.clip(100 * vapour / saturation_vapour_pressure_hpa(indoor) + rng.standard_normal(n), 12, 85)
    co2 = 420 + 850 * _smooth(occ, 0.75 * per_hour) + 12 * rng.standard_normal(n)
    people = np.round(floor_area_m2 * use.people_per_m2 * occ)

    return BuildingTruth(
        energy_kwh=energy,
        baseline_energy_kwh=baseline,
        hvac_kwh=hvac_kwh,
        occupancy_fraction=occ,
        occupancy_people=people,
        indoor_temperature_c=np.round(indoor, 2),
        indoor_humidity_pct=np.round(indoor_rh, 1),
        co2_ppm=np.round(co2, 0),
        outdoor_temperature_c=outdoor,
    )
