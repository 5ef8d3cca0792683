"""Weather a site did not send, derived from what it did: relative humidity from dew point, and global
horizontal irradiance from the sun's position, reduced by cloud cover where that is known.

Pure numpy, vectorised over hours. Each formula is a standard one, named where it is used, so that a
derived value can be reproduced by hand:
- Magnus formula with the Alduchov & Eskridge (1996) coefficients (the inverse of `bronze.dew_point_c`).
- Solar position from Spencer's (1971) Fourier series for declination and the equation of time (NOAA's
  "general solar position calculations"), good to a fraction of a degree: ample for hourly means.
- Clear-sky GHI from Haurwitz (1945): needs only the zenith angle, no aerosol or water-vapour data.
- Cloud reduction from Kasten & Czeplak (1980): GHI = GHI_clear * (1 - 0.75 * (N/8)^3.4), N in oktas.
"""

from __future__ import annotations

import numpy as np

MAGNUS_A, MAGNUS_B = 17.625, 243.04  # Alduchov & Eskridge; same as lakehouse.bronze.dew_point_c
HAURWITZ_SCALE_WM2, HAURWITZ_EXTINCTION = 1098.0, 0.059
KASTEN_CZEPLAK_A, KASTEN_CZEPLAK_B = 0.75, 3.4
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def relative_humidity_pct(temperature_c: np.ndarray, dew_point_c: np.ndarray) -> np.ndarray:
    """Relative humidity (%) from air temperature and dew point: e_s(Td) / e_s(T), capped at 100 %
    (a dew point a little above the temperature is sensor noise, not supersaturation)."""
    t = np.asarray(temperature_c, dtype=np.float64)
    td = np.asarray(dew_point_c, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rh = 100.0 * np.exp(MAGNUS_A * td / (MAGNUS_B + td) - MAGNUS_A * t / (MAGNUS_B + t))
    return np.clip(rh, 0.0, 100.0)


def cos_solar_zenith(latitude_deg: np.ndarray, longitude_deg: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """Cosine of the solar zenith angle at UTC instants `ts_us` (microseconds since the epoch)."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    days = ts_us // DAY_US
    seconds_of_day = (ts_us - days * DAY_US) / 1e6
    day_of_year = (days.astype("datetime64[D]") - days.astype("datetime64[D]").astype("datetime64[Y]")).astype(np.int64) + 1
    year = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    days_in_year = np.where((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0)), 366, 365)
    hour = seconds_of_day / 3600.0
    g = 2 * np.pi / days_in_year * (day_of_year - 1 + (hour - 12) / 24)  # fractional year, radians
    eq_time_min = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g)
                            - 0.014615 * np.cos(2 * g) - 0.040849 * np.sin(2 * g))
    declination = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
                   + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    true_solar_min = seconds_of_day / 60.0 + eq_time_min + 4.0 * np.asarray(longitude_deg, dtype=np.float64)
    hour_angle = np.deg2rad(true_solar_min / 4.0 - 180.0)
    lat = np.deg2rad(np.asarray(latitude_deg, dtype=np.float64))
    return np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)


def clear_sky_ghi_wm2(latitude_deg: np.ndarray, longitude_deg: np.ndarray, hour_start_us: np.ndarray) -> np.ndarray:
    """Haurwitz clear-sky global horizontal irradiance (W/m2) for the hours starting at `hour_start_us`,
    with the sun's position at the middle of each hour standing for the hour's mean; 0 at night."""
    cos_z = cos_solar_zenith(latitude_deg, longitude_deg, np.asarray(hour_start_us, dtype=np.int64) + HOUR_US // 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ghi = HAURWITZ_SCALE_WM2 * cos_z * np.exp(-HAURWITZ_EXTINCTION / cos_z)
    return np.where(cos_z > 0, ghi, 0.0)


def cloud_adjusted_ghi_wm2(clear_sky_wm2: np.ndarray, cloud_cover_pct: np.ndarray) -> np.ndarray:
    """Kasten-Czeplak: clear-sky GHI reduced by total cloud cover (N/8 oktas = cloud_cover_pct/100)."""
    cover = np.clip(np.asarray(cloud_cover_pct, dtype=np.float64) / 100.0, 0.0, 1.0)
    return np.asarray(clear_sky_wm2, dtype=np.float64) * (1.0 - KASTEN_CZEPLAK_A * cover**KASTEN_CZEPLAK_B)
