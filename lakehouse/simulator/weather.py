"""Synthetic weather per site: hourly truth, observations and day-ahead forecasts with growing error.

Temperature is a seasonal cycle plus a cloud-damped diurnal cycle plus synoptic (multi-day) AR(1)
noise; cloud cover and wind are AR(1) latent processes squashed into their ranges; solar radiation
is clear-sky irradiance from the sun's elevation, dimmed by cloud (Kasten-Czeplak); humidity follows
from a dew point that moves slower than the air temperature, so it has a realistic diurnal cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lakehouse.simulator.sites import Site

HOUR_US = 3_600_000_000


def recursive_filter(x: np.ndarray, a: float, y0: float = 0.0) -> np.ndarray:
    """y[n] = a * y[n-1] + x[n] with y[-1] = y0, vectorised in blocks.

    Within a block y[k] = a**k * (a * y_prev + sum_{j<=k} x[j] * a**-j); blocks are short enough that
    a**-k stays far from overflow, so the loop runs a handful of times instead of once per sample.
    """
    n = len(x)
    y = np.empty(n, dtype=np.float64)
    if n == 0:
        return y
    if a <= 0:
        return x.astype(np.float64)
    block = int(max(1, min(n, 60.0 / max(-np.log(a), 1e-12))))  # a**-block <= e**60
    powers = a ** np.arange(block, dtype=np.float64)
    prev = y0
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        p = powers[: hi - lo]
        y[lo:hi] = p * (a * prev + np.cumsum(x[lo:hi] / p))
        prev = y[hi - 1]
    return y


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) series with lag-one correlation `phi` and marginal standard deviation `sd`."""
    white = rng.standard_normal(n + 1) * sd
    # Start from the stationary distribution, so no burn-in is needed.
    return recursive_filter(white[1:] * np.sqrt(1 - phi**2), phi, white[0])


def saturation_vapour_pressure_hpa(temperature_c: np.ndarray) -> np.ndarray:
    return 6.1094 * np.exp(17.625 * temperature_c / (temperature_c + 243.04))


def clear_sky_ghi_wm2(ts_us: np.ndarray, latitude: float, longitude: float) -> np.ndarray:
    """Clear-sky global horizontal irradiance from the solar elevation (Haurwitz-like)."""
    days = ts_us / (86_400 * 1e6)
    day_of_year = (days + 4.0) % 365.25  # epoch starts on 1 Jan 1970; good enough for a climate
    utc_hour = (ts_us // HOUR_US % 24) + (ts_us % HOUR_US) / HOUR_US
    declination = np.radians(23.44) * np.sin(2 * np.pi * (day_of_year - 81) / 365.25)
    hour_angle = np.radians(15.0 * (utc_hour + longitude / 15.0 - 12.0))
    lat = np.radians(latitude)
    sin_elev = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)
    sin_elev = np.clip(sin_elev, 0.0, None)
    return 1098.0 * sin_elev * np.exp(-0.057 / np.maximum(sin_elev, 1e-3)) * (sin_elev > 0)


@dataclass
class SiteWeather:
    """Hourly weather truth for one site on a UTC hour grid (microseconds since the epoch)."""

    site_id: str
    ts_us: np.ndarray
    temperature_c: np.ndarray
    relative_humidity_pct: np.ndarray
    dew_point_c: np.ndarray
    wind_speed_ms: np.ndarray
    cloud_cover_pct: np.ndarray
    solar_radiation_wm2: np.ndarray

    def at(self, ts_us: np.ndarray, name: str) -> np.ndarray:
        """A variable linearly interpolated onto another time grid (the meters' intervals)."""
        return np.interp(ts_us.astype(np.float64), self.ts_us.astype(np.float64), getattr(self, name))


def simulate_site_weather(site: Site, ts_us: np.ndarray, rng: np.random.Generator, heat_us: list[tuple[int, int, float]]) -> SiteWeather:
    """Hourly truth on `ts_us`; `heat_us` lists (start, end, delta_c) heat waves added to temperature."""
    n = len(ts_us)
    day_of_year = (ts_us / (86_400 * 1e6) + 4.0) % 365.25
    solar_hour = (ts_us / HOUR_US + site.longitude / 15.0) % 24
    cloud_latent = ar1(rng, n, np.exp(-1 / 18), 1.0) + 0.2 * np.cos(2 * np.pi * (day_of_year - 15) / 365.25)
    cloud = 100.0 / (1.0 + np.exp(-1.6 * cloud_latent))
    seasonal = site.mean_temperature_c - site.seasonal_amplitude_c * np.cos(2 * np.pi * (day_of_year - 20) / 365.25)
    diurnal = site.diurnal_amplitude_c * np.cos(2 * np.pi * (solar_hour - 15.0) / 24.0) * (1.0 - 0.6 * cloud / 100.0)
    synoptic = ar1(rng, n, np.exp(-1 / 60), site.synoptic_sd_c)
    temperature = seasonal + diurnal + synoptic + 0.3 * rng.standard_normal(n)
    for start, end, delta in heat_us:
        temperature = temperature + np.where((ts_us >= start) & (ts_us < end), delta, 0.0)
    # The dew point follows the daily mean air temperature, not its diurnal swing; cloudy air is moister.
    depression = np.clip(site.dew_point_depression_c + ar1(rng, n, np.exp(-1 / 36), 1.5) - 0.03 * (cloud - 50), 0.3, None)
    dew_point = np.minimum(seasonal + synoptic - depression, temperature)
    rh = np.clip(100.0 * saturation_vapour_pressure_hpa(dew_point) / saturation_vapour_pressure_hpa(temperature), 5, 100)
    wind = site.mean_wind_ms * np.exp(0.45 * ar1(rng, n, np.exp(-1 / 12), 1.0) - 0.1) * (
        1 + 0.15 * np.cos(2 * np.pi * (solar_hour - 14) / 24)
    )
    ghi = clear_sky_ghi_wm2(ts_us, site.latitude, site.longitude) * (1 - 0.75 * (cloud / 100.0) ** 3.4)
    return SiteWeather(
        site_id=site.site_id,
        ts_us=ts_us,
        temperature_c=np.round(temperature, 2),
        relative_humidity_pct=np.round(rh, 1),
        dew_point_c=np.round(dew_point, 2),
        wind_speed_ms=np.round(np.clip(wind, 0, None), 2),
        cloud_cover_pct=np.round(cloud, 1),
        solar_radiation_wm2=np.round(ghi, 1),
    )


# Forecast error growth per hour of lead (random-walk steps): ~1.5 K, 8 %RH, 20 % wind, 25 %-points of
# cloud at a day's lead, the typical skill of a regional NWP model.
ERROR_STEP = {"temperature_c": 0.30, "relative_humidity_pct": 1.6, "wind_speed_ms": 0.04, "cloud_cover_pct": 5.0}


def day_ahead_forecasts(
    site: Site, truth: SiteWeather, issue_us: np.ndarray, max_lead_h: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Forecasts issued at each of `issue_us` for leads 1..max_lead_h: truth plus lead-growing error.

    Each run's error is a random walk over lead time, so consecutive hours of one forecast are
    correlated (a forecast that is too warm at 10:00 is too warm at 11:00) and the spread grows like
    the square root of the lead. Solar is recomputed from the forecast cloud cover.
    """
    leads = np.arange(1, max_lead_h + 1)
    ts = (issue_us[:, None] + leads[None, :] * HOUR_US).ravel()
    issued = np.repeat(issue_us, len(leads))
    index = np.searchsorted(truth.ts_us, ts)
    index = np.clip(index, 0, len(truth.ts_us) - 1)
    shape = (len(issue_us), len(leads))
    err = {k: np.cumsum(rng.standard_normal(shape) * s, axis=1).ravel() for k, s in ERROR_STEP.items()}
    temperature = truth.temperature_c[index] + err["temperature_c"]
    rh = np.clip(truth.relative_humidity_pct[index] + err["relative_humidity_pct"], 5, 100)
    wind = np.clip(truth.wind_speed_ms[index] * np.exp(err["wind_speed_ms"]), 0, None)
    cloud = np.clip(truth.cloud_cover_pct[index] + err["cloud_cover_pct"], 0, 100)
    ghi = clear_sky_ghi_wm2(ts, site.latitude, site.longitude) * (1 - 0.75 * (cloud / 100.0) ** 3.4)
    dew = _dew_point(temperature, rh)
    return {
        "issued_at": issued,
        "ts": ts,
        "temperature_c": np.round(temperature, 2),
        "relative_humidity_pct": np.round(rh, 1),
        "dew_point_c": np.round(dew, 2),
        "wind_speed_ms": np.round(wind, 2),
        "cloud_cover_pct": np.round(cloud, 1),
        "solar_radiation_wm2": np.round(ghi, 1),
    }


def _dew_point(temperature_c: np.ndarray, rh_pct: np.ndarray) -> np.ndarray:
    a, b = 17.625, 243.04
    gamma = np.log(np.clip(rh_pct, 1e-3, 100) / 100.0) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)
