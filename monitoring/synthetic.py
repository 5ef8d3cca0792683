"""A portfolio with a known truth for monitoring tests, benchmarks and demos.

Gold-features-shaped hourly frames where the HVAC share of the load is explicit (so a retrofit can cut
it), the season can move (winter → spring), and after-hours waste can be injected with its exact kWh;
plus served forecasts from a weather-aware linear forecaster (hour-of-week profile + heating and
cooling degree terms on the day-ahead temperature forecast) fitted per building, issued daily for the
next 24 hours. The truth's heating term is mildly non-linear, so the linear forecaster has a realistic,
season-dependent error rather than pure noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Retrofit:
    building_id: str
    start: pd.Timestamp
    hvac_reduction: float = 0.25


@dataclass(frozen=True)
class AfterHoursWaste:
    building_id: str
    start: pd.Timestamp  # first wasteful hour (UTC), inclusive
    hours: int
    extra_kw: float

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(hours=self.hours)

    @property
    def excess_kwh(self) -> float:
        return self.extra_kw * self.hours


def portfolio_features(
    building_ids: tuple[str, ...],
    start: str,
    days: int,
    *,
    seed: int = 0,
    temperature_start_c: float = 2.0,
    temperature_end_c: float = 2.0,
    retrofits: tuple[Retrofit, ...] = (),
    waste: tuple[AfterHoursWaste, ...] = (),
    noise_share: float = 0.04,
) -> pd.DataFrame:
    """Hourly gold-feature rows (UTC = local time here) with an `hvac_kwh` column for the truth."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=days * 24, freq="h")
    hour, dow = ts.hour.to_numpy(), ts.dayofweek.to_numpy()
    trend = np.linspace(temperature_start_c, temperature_end_c, len(ts))
    weather_noise = np.zeros(len(ts))
    shocks = rng.normal(0, 0.8, len(ts))
    for i in range(1, len(ts)):
        weather_noise[i] = 0.95 * weather_noise[i - 1] + shocks[i]
    temperature = trend + 4.0 * np.sin(2 * np.pi * (hour - 9) / 24) + weather_noise
    forecast_temperature = temperature + rng.normal(0, 0.8, len(ts))
    humidity = np.clip(75 - 1.0 * (temperature - 8) + rng.normal(0, 4, len(ts)), 10, 100)
    solar = np.clip(500 * np.sin(np.pi * (hour - 6) / 12), 0, None) * rng.uniform(0.5, 1.0, len(ts))
    weekend = dow >= 5
    open_hours = (~weekend) & (hour >= 7) & (hour < 19)
    frames = []
    for i, building_id in enumerate(building_ids):
        size = 1.0 + 0.35 * (i % 5)
        heating = np.clip(18.0 - temperature, 0, None) ** 1.15
        hvac = size * np.where(open_hours, 2.4 * heating, 1.0 * heating) + size * 1.5 * np.clip(temperature - 24, 0, None)
        for r in retrofits:
            if r.building_id == building_id:
                hvac = np.where(ts >= r.start, hvac * (1 - r.hvac_reduction), hvac)
        occupancy = np.where(open_hours, 60 * size, 1.0) * rng.uniform(0.85, 1.15, len(ts))
        load = size * (25 + np.where(open_hours, 45, 0.0)) + hvac
        energy = load * (1 + rng.normal(0, noise_share, len(ts)))
        for w in waste:
            if w.building_id == building_id:
                energy = energy + np.where((ts >= w.start) & (ts < w.end), w.extra_kw, 0.0)
        frames.append(
            pd.DataFrame(
                {
                    "building_id": building_id,
                    "ts": ts,
                    "energy_kwh": energy,
                    "energy_valid": True,
                    "hour_of_day": hour.astype(np.int8),
                    "day_of_week": dow.astype(np.int8),
                    "is_weekend": weekend,
                    "is_holiday": False,
                    "temperature": temperature,
                    "humidity": humidity,
                    "solar_radiation": solar,
                    "occupancy": occupancy,
                    "forecast_temperature": forecast_temperature,
                    "forecast_humidity": humidity + rng.normal(0, 3, len(ts)),
                    "forecast_solar_radiation": solar * rng.uniform(0.8, 1.2, len(ts)),
                    "hvac_kwh": hvac,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _how(frame: pd.DataFrame) -> np.ndarray:
    return frame["day_of_week"].to_numpy(int) * 24 + frame["hour_of_day"].to_numpy(int)


def _degree_terms(frame: pd.DataFrame) -> np.ndarray:
    t = frame["forecast_temperature"].to_numpy(float)
    hour = frame["hour_of_day"].to_numpy()
    open_hours = (~frame["is_weekend"].to_numpy(bool)) & (hour >= 7) & (hour < 19)
    hdd = np.clip(18.0 - t, 0, None)
    return np.column_stack([hdd * open_hours, hdd * ~open_hours, np.clip(t - 24, 0, None)])


@dataclass(frozen=True)
class LinearForecaster:
    """Per building: least squares on hour-of-week and degree terms; quantiles from training residuals."""

    effects: dict[str, np.ndarray]
    coefficients: dict[str, np.ndarray]
    residual_sd: dict[str, float]

    @classmethod
    def fit(
        cls, features: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp, recent_days: int = 0, recent_weight: float = 1.0
    ) -> "LinearForecaster":
        """Least squares on [start, end); the last `recent_days` count `recent_weight` times (a retrain
        after a change must learn the new regime from the few days it has seen of it, so it is given
        those days repeated)."""
        from monitoring.anomalies import fit_time_of_week

        train = features[(features["ts"] < end) & features["energy_valid"]]
        if start is not None:
            train = train[train["ts"] >= start]
        if recent_days and recent_weight > 1:
            recent = train[train["ts"] >= end - pd.Timedelta(days=recent_days)]
            train = pd.concat([train, *[recent] * (int(round(recent_weight)) - 1)], ignore_index=True)
        effects, coefficients, sd = {}, {}, {}
        for building_id, g in train.groupby("building_id"):
            how, z, y = _how(g), _degree_terms(g), g["energy_kwh"].to_numpy(float)
            effect, gamma, n_parameters = fit_time_of_week(how, z, y)
            effects[str(building_id)], coefficients[str(building_id)] = effect, gamma
            residual = y - effect[how] - z @ gamma
            # in-sample residuals understate the forecast error: correct for the parameters fitted
            sd[str(building_id)] = float(np.std(residual) * np.sqrt(len(y) / max(len(y) - n_parameters, 1)))
        return cls(effects, coefficients, sd)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = []
        for building_id, g in frame.groupby("building_id"):
            b = str(building_id)
            p50 = self.effects[b][_how(g)] + _degree_terms(g) @ self.coefficients[b]
            sd = self.residual_sd[b]
            out.append(pd.DataFrame({"building_id": building_id, "ts": g["ts"].to_numpy(), "yhat_p50": p50,
                                     "yhat_p10": p50 - 1.2816 * sd, "yhat_p90": p50 + 1.2816 * sd}))
        return pd.concat(out, ignore_index=True)


def served_forecasts(
    features: pd.DataFrame,
    forecaster: LinearForecaster,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model_name: str = "building_energy_lstm",
    model_version: str = "1",
) -> pd.DataFrame:
    """gold.forecasts rows: issued at each midnight for the next 24 hours, from `start` to `end`."""
    window = features[(features["ts"] >= start) & (features["ts"] < end)]
    predicted = forecaster.predict(window)
    issued_at = predicted["ts"].dt.floor("D")
    return predicted.assign(
        issued_at=issued_at,
        horizon_h=((predicted["ts"] - issued_at) / pd.Timedelta(hours=1)).astype(np.int32) + 1,
        yhat=predicted["yhat_p50"],
        model_name=model_name,
        model_version=model_version,
        is_fallback=False,
    )


def to_contract_table(frame: pd.DataFrame, contract) -> "pa.Table":
    """The frame as a table of `contract`; columns the synthetic frame lacks are null (date is derived)."""
    import pyarrow as pa

    columns = {}
    for field in contract.schema:
        if field.name in frame.columns:
            columns[field.name] = pa.array(frame[field.name], type=field.type, from_pandas=True)
        elif field.name != "date":
            columns[field.name] = pa.nulls(len(frame), type=field.type)
    return pa.table(columns)
