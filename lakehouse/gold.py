"""Gold `features`: silver hours plus calendar, holidays, degree-hours, interactions, lags and trailing means.

Everything backward-looking is computed on a complete hourly grid per building, so "24 h before" is a
time offset, never a row offset. Trailing means exclude the current hour. Standardized columns use the
feature catalogue's parameters (fitted once, then reused), so re-running an interval reproduces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lakehouse.schemas import FEATURES
from lakehouse.silver import forecast_origins

HOUR_US = 3_600_000_000
PERSISTENCE_LAG_H = 24  # a persistence weather forecast repeats the same hour of the previous day
STANDARDIZED = {"temperature_std": "temperature", "humidity_std": "humidity", "occupancy_std": "occupancy"}


@dataclass(frozen=True)
class FeatureDoc:
    name: str
    description: str
    unit: str
    computed: str


def feature_docs(settings) -> list[FeatureDoc]:
    f = settings.features
    return [
        FeatureDoc("energy_kwh", "Energy in the hour (target)", "kWh", "silver energy_kwh (null on long gaps)"),
        FeatureDoc("energy_valid", "Usable as a training target", "bool", "energy present, not imputed, no outlier in the hour"),
        FeatureDoc("hour_of_day", "Hour of the building's local day", "h", "local time of ts (building timezone)"),
        FeatureDoc("day_of_week", "Local day of week", "0=Monday", "local date weekday"),
        FeatureDoc("month", "Local month", "1-12", "local date month"),
        FeatureDoc("season", "Meteorological season", "0 winter .. 3 autumn", "local month, shifted by two for the southern hemisphere"),
        FeatureDoc("is_weekend", "Saturday or Sunday, local", "bool", "day_of_week >= 5"),
        FeatureDoc("is_holiday", "Public holiday in the building's country", "bool", "holidays.country_holidays(country) on the local date"),
        FeatureDoc("is_working_hour", "Working hour of a working day", "bool", f"not weekend/holiday and {f.working_hours[0]} <= hour < {f.working_hours[1]}"),
        FeatureDoc("hour_sin", "Hour of day on the unit circle", "1", "sin(2*pi*hour/24)"),
        FeatureDoc("hour_cos", "Hour of day on the unit circle", "1", "cos(2*pi*hour/24)"),
        FeatureDoc("dow_sin", "Day of week on the unit circle", "1", "sin(2*pi*dow/7)"),
        FeatureDoc("dow_cos", "Day of week on the unit circle", "1", "cos(2*pi*dow/7)"),
        FeatureDoc("doy_sin", "Day of year on the unit circle", "1", "sin(2*pi*(local day of year - 1)/365.25): the "
                   "season and the academic or business year (terms, vacations) a week of history cannot show"),
        FeatureDoc("doy_cos", "Day of year on the unit circle", "1", "cos(2*pi*(local day of year - 1)/365.25)"),
        FeatureDoc("temperature", "Observed outdoor temperature", "degC", "hourly mean of the site's observations"),
        FeatureDoc("humidity", "Observed outdoor relative humidity", "%",
                   "hourly mean of the site's observations; where a site sends dew point but no humidity, derived by "
                   "the Magnus formula (Alduchov-Eskridge) and named in silver quality_flags as humidity_from_dew_point"),
        FeatureDoc("solar_radiation", "Observed global horizontal radiation", "W/m2",
                   "hourly mean of the site's observations; where the site sends none, Haurwitz clear-sky irradiance "
                   "at the building's location (sun at mid-hour), times 1 - 0.75*(cloud/100)^3.4 (Kasten-Czeplak) where "
                   "the site sends cloud cover; silver quality_flags name it solar_radiation_from_cloud_cover or "
                   "solar_radiation_clear_sky"),
        FeatureDoc("indoor_temperature", "Indoor temperature", "degC", "hourly mean of the building's checked sensors"),
        FeatureDoc("occupancy", "Occupancy", "people", "hourly mean of the building's checked sensors"),
        FeatureDoc("heating_degree_hours", "Heating degree-hours", "K*h", f"max(0, {f.heating_base_c} - temperature) for one hour"),
        FeatureDoc("cooling_degree_hours", "Cooling degree-hours", "K*h", f"max(0, temperature - {f.cooling_base_c}) for one hour"),
        FeatureDoc("temp_humidity_interaction", "Temperature x relative humidity", "degC", "temperature * humidity / 100"),
        FeatureDoc("occupancy_time_interaction", "Occupancy during working hours", "people", "occupancy * is_working_hour"),
        FeatureDoc("lagged_energy", "Energy 24 h before", "kWh", "energy_kwh at ts - 24 h"),
        FeatureDoc("lagged_energy_168h", "Energy one week before", "kWh", "energy_kwh at ts - 168 h"),
        FeatureDoc("rolling_avg_energy", "Mean energy of the 24 h before this hour", "kWh",
                   f"mean of energy_kwh over [ts-24h, ts-1h], null below {f.rolling_min_share:.0%} coverage"),
        FeatureDoc("rolling_avg_energy_168h", "Mean energy of the 168 h before this hour", "kWh",
                   f"mean of energy_kwh over [ts-168h, ts-1h], null below {f.rolling_min_share:.0%} coverage"),
        FeatureDoc("temperature_std", "Standardized outdoor temperature", "1", "(temperature - mean) / std, per building"),
        FeatureDoc("humidity_std", "Standardized outdoor humidity", "1", "(humidity - mean) / std, per building"),
        FeatureDoc("occupancy_std", "Standardized occupancy", "1", "(occupancy - mean) / std, per building"),
        FeatureDoc("forecast_temperature", "Forecast outdoor temperature", "degC",
                   "latest forecast issued before the hour's forecast origin (local midnight); without one, a persistence "
                   "forecast: temperature of the same hour the day before (ts - 24 h; ts - 25 h for the 25th hour of a day "
                   "when clocks go back), always over before the origin, never the hour itself (see forecast_source)"),
        FeatureDoc("forecast_humidity", "Forecast outdoor relative humidity", "%",
                   "as forecast_temperature; an issued forecast with dew point but no humidity is converted as humidity is "
                   "(silver quality_flags: forecast_humidity_from_dew_point)"),
        FeatureDoc("forecast_solar_radiation", "Forecast global horizontal radiation", "W/m2",
                   "as forecast_temperature; an issued forecast without radiation gets clear-sky irradiance reduced by its "
                   "cloud cover as solar_radiation does (silver quality_flags: forecast_solar_radiation_from_cloud_cover "
                   "or forecast_solar_radiation_clear_sky)"),
        FeatureDoc("forecast_issued_at", "Issue time of the forecast used", "UTC", "always before the hour's forecast origin; null for persistence"),
        FeatureDoc("forecast_source", "Where the forecast_* columns come from", "text",
                   "'issued' (a forecast issued before the origin), 'persistence' (the day-before values above), "
                   "null (neither exists)"),
    ]


@dataclass
class FeatureCatalogue:
    """Names, meanings, units, derivation and scaling parameters of the gold features."""

    features: list[dict]
    scaling: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # feature -> building -> {mean, std}
    settings: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"features": self.features, "scaling": self.scaling, "settings": self.settings}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureCatalogue":
        raw = json.loads(text)
        return cls(features=raw["features"], scaling=raw.get("scaling", {}), settings=raw.get("settings", {}))


def fit_scaling(features: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation per building of each standardized feature's source column."""
    scaling: dict[str, dict[str, dict[str, float]]] = {}
    for std_name, source in STANDARDIZED.items():
        stats = features.groupby("building_id")[source].agg(["mean", "std"])
        scaling[std_name] = {
            str(b): {"mean": float(r["mean"]) if np.isfinite(r["mean"]) else 0.0,
                     "std": float(r["std"]) if np.isfinite(r["std"]) and r["std"] > 0 else 1.0}
            for b, r in stats.iterrows()
        }
    return scaling


def build_catalogue(settings, scaling) -> FeatureCatalogue:
    docs = feature_docs(settings)
    entries = []
    for d in docs:
        entry = {"name": d.name, "description": d.description, "unit": d.unit, "computed": d.computed,
                 "dtype": str(FEATURES.schema.field(d.name).type)}
        if d.name in scaling:
            entry["scaling"] = scaling[d.name]
        entries.append(entry)
    return FeatureCatalogue(features=entries, scaling=scaling, settings=settings.features.model_dump(mode="json"))


def _holiday_mask(local_dates: pd.Series, country: str) -> np.ndarray:
    import holidays

    years = sorted({d.year for d in local_dates.unique()})
    try:
        calendar = holidays.country_holidays(country, years=years)
    except NotImplementedError:
        return np.zeros(len(local_dates), dtype=bool)
    return local_dates.isin(set(calendar.keys())).to_numpy()


def _trailing_mean(values: np.ndarray, window: int, min_count: int) -> np.ndarray:
    """Mean of the `window` values before each position (the current one excluded)."""
    finite = np.isfinite(values)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(len(values))
    lo = np.maximum(idx - window, 0)
    total = csum[idx] - csum[lo]
    count = ccount[idx] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= min_count, total / np.maximum(count, 1), np.nan)


def _lag(values: np.ndarray, hours: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if hours < len(values):
        out[hours:] = values[:-hours]
    return out


def persistence_lag_h(hours_us: np.ndarray, origin_us: np.ndarray) -> np.ndarray:
    """Hours back to the persistence value of each hour: 24 (the same hour of the previous day), or more
    where that hour is not yet over at the origin (the 25th hour of a day when the clocks go back)."""
    return np.maximum(PERSISTENCE_LAG_H, (hours_us - origin_us) // HOUR_US + 1)


def day_ahead_weather(h: pd.DataFrame, temperature: np.ndarray, humidity: np.ndarray, solar: np.ndarray,
                      hours_us: np.ndarray, origin_us: np.ndarray) -> dict[str, np.ndarray]:
    """The weather forecast known at each hour's origin, on one building's complete hourly grid `h`.

    An issued forecast (silver's latest issued before the origin) wins. Without one, a persistence weather
    forecast: the observed (or silver-derived) value of the same hour the day before, which is over before
    the origin - never the observation of the hour being forecast. `forecast_source` says which.
    """
    issued = h["forecast_issued_at"].notna().to_numpy()
    source_row = np.arange(len(h)) - persistence_lag_h(hours_us, origin_us)
    known = source_row >= 0

    def persisted(values: np.ndarray) -> np.ndarray:
        out = np.full(len(values), np.nan)
        out[known] = values[source_row[known]]
        return out

    persistence = {"forecast_temperature": persisted(temperature), "forecast_humidity": persisted(humidity),
                   "forecast_solar_radiation": persisted(solar)}
    use_persistence = ~issued & np.logical_or.reduce([np.isfinite(v) for v in persistence.values()])
    silver_columns = {"forecast_temperature": "forecast_temperature_c", "forecast_humidity": "forecast_humidity_pct",
                      "forecast_solar_radiation": "forecast_solar_radiation_wm2"}
    out: dict[str, np.ndarray] = {}
    for name, column in silver_columns.items():
        out[name] = np.where(issued, h[column].to_numpy(dtype=np.float64), np.where(use_persistence, persistence[name], np.nan))
    out["forecast_source"] = np.where(issued, "issued", np.where(use_persistence, "persistence", None)).astype(object)
    return out


def hourly_to_features(hourly_df: pd.DataFrame, registry, settings, *, scaling: dict | None = None) -> pd.DataFrame:
    """Gold features for every silver row. `scaling` (catalogue parameters) is fitted on the frame if None."""
    f = settings.features
    parts = []
    for building_id, rows in hourly_df.groupby("building_id", sort=True):
        building = registry.get(building_id)
        rows = rows.sort_values("ts")
        start, end = rows["ts"].iloc[0], rows["ts"].iloc[-1]
        grid = pd.DataFrame({"ts": pd.date_range(start, end, freq="h")})
        grid["ts"] = grid["ts"].astype(rows["ts"].dtype)
        h = grid.merge(rows, on="ts", how="left")
        h["building_id"] = building_id
        in_silver = h["ts"].isin(rows["ts"]).to_numpy()

        local = h["ts"].dt.tz_convert(building.timezone)
        hour = local.dt.hour.to_numpy()
        dow = local.dt.dayofweek.to_numpy()
        month = local.dt.month.to_numpy()
        doy = local.dt.dayofyear.to_numpy()
        holiday = _holiday_mask(local.dt.date, building.country)
        weekend = dow >= 5
        season = (month % 12) // 3
        if building.latitude < 0:
            season = (season + 2) % 4
        working = ~weekend & ~holiday & (hour >= f.working_hours[0]) & (hour < f.working_hours[1])

        energy = h["energy_kwh"].to_numpy(dtype=np.float64)
        temperature = h["outdoor_temperature_c"].to_numpy(dtype=np.float64)
        humidity = h["outdoor_humidity_pct"].to_numpy(dtype=np.float64)
        solar = h["solar_radiation_wm2"].to_numpy(dtype=np.float64)
        occupancy = h["occupancy"].to_numpy(dtype=np.float64)
        hours_us = h["ts"].astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]").astype(np.int64)
        origin_us = forecast_origins(hours_us, building.timezone)
        forecast = day_ahead_weather(h, temperature, humidity, solar, hours_us, origin_us)
        out = pd.DataFrame(
            {
                "building_id": building_id,
                "ts": h["ts"],
                "energy_kwh": energy,
                "energy_valid": np.isfinite(energy) & ~h["imputed"].astype("boolean").fillna(False).to_numpy(dtype=bool) & ~h["outlier"].astype("boolean").fillna(False).to_numpy(dtype=bool),
                "hour_of_day": hour.astype(np.int8),
                "day_of_week": dow.astype(np.int8),
                "month": month.astype(np.int8),
                "season": season.astype(np.int8),
                "is_weekend": weekend,
                "is_holiday": holiday,
                "is_working_hour": working,
                "hour_sin": np.sin(2 * np.pi * hour / 24),
                "hour_cos": np.cos(2 * np.pi * hour / 24),
                "dow_sin": np.sin(2 * np.pi * dow / 7),
                "dow_cos": np.cos(2 * np.pi * dow / 7),
                "doy_sin": np.sin(2 * np.pi * (doy - 1) / 365.25),
                "doy_cos": np.cos(2 * np.pi * (doy - 1) / 365.25),
                "temperature": temperature,
                "humidity": humidity,
                "solar_radiation": solar,
                "indoor_temperature": h["indoor_temperature_c"].to_numpy(dtype=np.float64),
                "occupancy": occupancy,
                "heating_degree_hours": np.maximum(f.heating_base_c - temperature, 0.0),
                "cooling_degree_hours": np.maximum(temperature - f.cooling_base_c, 0.0),
                "temp_humidity_interaction": temperature * humidity / 100.0,
                "occupancy_time_interaction": occupancy * working,
                "lagged_energy": _lag(energy, 24),
                "lagged_energy_168h": _lag(energy, 168),
                "rolling_avg_energy": _trailing_mean(energy, 24, int(np.ceil(24 * f.rolling_min_share))),
                "rolling_avg_energy_168h": _trailing_mean(energy, 168, int(np.ceil(168 * f.rolling_min_share))),
                **forecast,
                "forecast_issued_at": h["forecast_issued_at"],
            }
        )
        out["forecast_origin"] = pd.to_datetime(origin_us, unit="us", utc=True)
        parts.append(out[in_silver])
    if not parts:
        return pd.DataFrame(columns=[*FEATURES.schema.names, "forecast_origin"])
    features = pd.concat(parts, ignore_index=True)
    scaling = scaling if scaling is not None else fit_scaling(features)
    for std_name, source in STANDARDIZED.items():
        params = scaling.get(std_name, {})
        mean = features["building_id"].map(lambda b: params.get(b, {}).get("mean", np.nan)).astype(float)
        std = features["building_id"].map(lambda b: params.get(b, {}).get("std", np.nan)).astype(float)
        features[std_name] = (features[source] - mean) / std
    features["date"] = features["ts"].dt.date
    return features


def future_features(silver: pd.DataFrame, forecasts: pd.DataFrame, registry, settings, building_id: str,
                    origin: pd.Timestamp, *, scaling: dict | None) -> pd.DataFrame:
    """Gold-feature rows for the `model.horizon_h` hours from `origin` for one building: calendar plus the
    weather forecast issued before the origin, built by the same code as gold (silver's forecast
    alignment, gold's calendar), with no energy and no observed weather since those hours have not
    happened yet. Where no forecast was issued, gold's persistence fallback (the same hour of the
    previous day) reads the silver history before the origin, exactly as it did for training rows;
    `forecast_source` says which. Pure: the building's silver (with `features.margin_h` before the
    origin) and its site's forecast rows in; used by online forecasting and batch scoring alike.
    """
    from lakehouse.schemas import BUILDING_HOURLY
    from lakehouse.silver import attach_weather

    origin_ts = pd.Timestamp(origin).tz_convert("UTC")
    read_from = origin_ts - pd.Timedelta(hours=settings.features.margin_h)
    silver = silver[(silver["building_id"] == building_id) & (silver["ts"] >= read_from) & (silver["ts"] < origin_ts)]
    hours = pd.date_range(origin_ts, periods=settings.model.horizon_h, freq="h")
    ahead = pd.DataFrame({"building_id": building_id, "ts": hours.astype("datetime64[us, UTC]")})
    days = forecasts["ts"].dt.tz_convert("UTC").dt.date
    forecasts = forecasts[(forecasts["kind"] == "forecast") & (forecasts["issued_at"] < origin_ts)
                          & (days >= origin_ts.date()) & (days <= hours[-1].date())]
    ahead = attach_weather(ahead, registry, None, forecasts, derive_observed=False)
    for column in BUILDING_HOURLY.schema.names:
        if column not in ahead.columns:
            ahead[column] = np.nan
    ahead[["imputed", "gap", "outlier"]] = False
    ahead["gap"] = True  # no reading yet: never a target
    ahead["n_readings"], ahead["expected_readings"], ahead["n_rejected"] = 0, 0, 0
    ahead["quality_flags"] = "future"
    frame = pd.concat([silver, ahead[silver.columns]], ignore_index=True)
    features = hourly_to_features(frame, registry, settings, scaling=scaling)
    return features[features["ts"] >= origin_ts].reset_index(drop=True)
