"""A portfolio with a known truth for monitoring tests, benchmarks and demos: a view of the simulator.

The frames are the simulator's buildings curated to gold (`ml.synthetic.simulated_gold_features`: one
world with the pipeline, the model tests and the demo; b01 a Berlin office, b02 a London shop, ...), with
the simulator's hourly truth beside each row: `hvac_kwh` (the HVAC share a retrofit cuts) and
`baseline_energy_kwh` (the load without injected after-hours waste). What a test wants to find is planted
through the simulator's own configuration: drift events (`lakehouse.simulator.retrofit`, `heat_wave`,
`occupancy_change`) and faults (`FaultConfig`, e.g. `FaultConfig.only("after_hours_waste")`), and their
exact spans and kWh are in the world's ground truth. The season moves as the simulated climate does: pick
the dates (January is winter, March to May warms).

Beside the data: served day-ahead forecasts from `TowtForecaster`, the CalTRACK hourly model
(`monitoring.towt`) fitted per building on the day-ahead temperature forecast. It assumes nothing about
the world it is fitted to: which hours of the week are occupied and where the temperature response bends
are learned from the training data (CalTRACK's occupancy and bin rules), so it fits the simulator no better
than it would fit a real meter, and its quantile band comes from its own residuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

TRUTH_COLUMNS = ("hvac_kwh", "baseline_energy_kwh")


def portfolio_world(
    building_ids: Sequence[str],
    start: str,
    days: int,
    *,
    seed: int = 0,
    drift: Sequence[Any] = (),
    faults: Any | None = None,
):
    """(features, world): hourly gold rows of the simulated `building_ids` (b01, b02, ...), `days` local days
    from each building's local midnight of `start`, with the truth columns; `world` (a `SimulatedGold`)
    carries the ground truth (`world.ground_truth`: planted faults and drift), registry and timezones.
    Cached per world (`lakehouse.simulator.gold_view`): tests asking for the same world simulate it once."""
    from ml.synthetic import portfolio_size, simulated_gold_features

    features, world = simulated_gold_features(
        portfolio_size(building_ids), start, days, seed, building_ids=tuple(building_ids), faults=faults, drift=drift
    )
    truth = world.truth_hourly[["building_id", "ts", *TRUTH_COLUMNS]]
    features = features.merge(truth, on=["building_id", "ts"], how="left", validate="one_to_one")
    return features, world


def portfolio_features(
    building_ids: Sequence[str],
    start: str,
    days: int,
    *,
    seed: int = 0,
    drift: Sequence[Any] = (),
    faults: Any | None = None,
) -> pd.DataFrame:
    """`portfolio_world`'s frame alone."""
    return portfolio_world(building_ids, start, days, seed=seed, drift=drift, faults=faults)[0]


def planted(world, kind: str) -> pd.DataFrame:
    """The world's ground-truth records of one planted kind (e.g. "after_hours_waste", "retrofit"), with
    UTC `start`/`end` and the record's `detail` JSON parsed into columns."""
    import json

    truth = world.ground_truth
    rows = truth[truth["kind"] == kind].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"the world has no planted {kind!r}; it has {sorted(set(truth['kind']))}")
    out = rows.drop(columns=[c for c in ("detail",) if c in rows])
    for column in ("start", "end"):
        if column in out:
            ts = pd.to_datetime(out[column])
            out[column] = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    if "detail" in rows:
        detail = pd.DataFrame([json.loads(d) if isinstance(d, str) and d else {} for d in rows["detail"]])
        out = pd.concat([out, detail.drop(columns=[c for c in detail if c in out])], axis=1)
    return out


def _how(frame: pd.DataFrame) -> np.ndarray:
    """Local hour of the week from gold's calendar columns; a public holiday is run as a Sunday."""
    dow = np.where(frame["is_holiday"].fillna(False).to_numpy(bool), 6, frame["day_of_week"].to_numpy(int))
    return dow * 24 + frame["hour_of_day"].to_numpy(int)


P10_P90 = (0.10, 0.90)


@dataclass(frozen=True)
class _BuildingModel:
    """One building's CalTRACK hourly segment plus a solar term per occupancy mode (the sun's gains move
    heating and cooling as much as the air temperature does, and they grow from winter to spring)."""

    occupied: np.ndarray  # bool [168], learned: CalTRACK's residual-sign rule
    occupied_bins: tuple[float, ...]  # temperature bin endpoints (°F), learned: CalTRACK's bin merging
    unoccupied_bins: tuple[float, ...]
    coefficients: np.ndarray
    seen_hours: np.ndarray

    @staticmethod
    def _inputs(frame: pd.DataFrame, observed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hour of week, temperature (°F) and solar radiation: observed ones to fit (a slope fitted on
        forecasts is diluted by their errors), the day-ahead forecasts to predict (all an origin knows)."""
        from monitoring.towt import to_fahrenheit

        temperature, solar = ("temperature", "solar_radiation") if observed else ("forecast_temperature", "forecast_solar_radiation")
        radiation = frame[solar].to_numpy(float) if solar in frame else np.zeros(len(frame))
        return _how(frame), to_fahrenheit(frame[temperature].to_numpy(float)), np.nan_to_num(radiation)

    def _design(self, how, temperature_f, solar) -> np.ndarray:
        from monitoring.towt import _design

        occ = self.occupied[how].astype(float)
        return np.hstack([_design(how, temperature_f, self.occupied, self.occupied_bins, self.unoccupied_bins),
                          np.column_stack([solar * occ, solar * (1.0 - occ)]) / 100.0])

    @classmethod
    def fit(cls, frame: pd.DataFrame, y: np.ndarray, weight: np.ndarray) -> "_BuildingModel":
        from monitoring.towt import HOURS_PER_WEEK, _wls, estimate_occupancy, fit_bin_endpoints

        how, temperature_f, solar = cls._inputs(frame, observed=True)
        occupied = estimate_occupancy(how, y, temperature_f, weight)
        occupied_bins = fit_bin_endpoints(temperature_f[occupied[how]])
        unoccupied_bins = fit_bin_endpoints(temperature_f[~occupied[how]])
        seen = np.bincount(how, minlength=HOURS_PER_WEEK) > 0
        model = cls(occupied, occupied_bins, unoccupied_bins, np.zeros(0), seen)
        coefficients = _wls(model._design(how, temperature_f, solar), y, weight)
        return cls(occupied, occupied_bins, unoccupied_bins, coefficients, seen)

    @property
    def n_parameters(self) -> int:
        return int(self.seen_hours.sum()) + len(self.occupied_bins) + len(self.unoccupied_bins) + 4

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        how, temperature_f, solar = self._inputs(frame, observed=False)
        out = self._design(how, temperature_f, solar) @ self.coefficients
        # An hour of the week never seen in training has no intercept: no forecast rather than a wrong one.
        return np.where(self.seen_hours[how], out, np.nan)


@dataclass(frozen=True)
class TowtForecaster:
    """Per building: CalTRACK hourly (hour-of-week intercepts, learned occupancy, data-driven temperature
    bins) on the day-ahead temperature forecast; p10/p90 from the training residuals' quantiles, widened
    for the parameters fitted (in-sample residuals understate the forecast error by about sqrt(n / (n - p)))."""

    segments: dict[str, "_BuildingModel"]
    residual_quantiles: dict[str, tuple[float, float]]

    @classmethod
    def fit(
        cls, features: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp, recent_days: int = 0,
        recent_weight: float = 1.0,
    ) -> "TowtForecaster":
        """Fit on the valid hours of [start, end); the last `recent_days` weigh `recent_weight` times as much
        (a retrain after a change must learn the new regime from the few days it has seen of it)."""
        train = features[(features["ts"] < end) & features["energy_valid"].fillna(False).astype(bool)]
        if start is not None:
            train = train[train["ts"] >= start]
        train = train[train["energy_kwh"].notna() & train["temperature"].notna() & train["forecast_temperature"].notna()]
        models, quantiles = {}, {}
        for building_id, g in train.groupby("building_id"):
            y = g["energy_kwh"].to_numpy(float)
            weight = np.ones(len(g))
            if recent_days and recent_weight != 1.0:
                weight[(g["ts"] >= end - pd.Timedelta(days=recent_days)).to_numpy()] = recent_weight
            model = _BuildingModel.fit(g, y, weight)
            residual = y - model.predict(g)  # on the forecasts, as served: the band holds their error too
            inflate = np.sqrt(len(y) / max(len(y) - model.n_parameters, 1))
            q10, q90 = np.quantile(residual, P10_P90) * inflate
            models[str(building_id)], quantiles[str(building_id)] = model, (float(q10), float(q90))
        if not models:
            raise ValueError(f"TowtForecaster: no valid training hours in [{start}, {end})")
        return cls(models, quantiles)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = []
        for building_id, g in frame.groupby("building_id"):
            b = str(building_id)
            if b not in self.segments:
                raise KeyError(f"TowtForecaster: building {b!r} was not in the training data; fitted {sorted(self.segments)}")
            p50 = np.clip(self.segments[b].predict(g), 0.0, None)
            q10, q90 = self.residual_quantiles[b]
            out.append(pd.DataFrame({"building_id": building_id, "ts": g["ts"].to_numpy(), "yhat_p50": p50,
                                     "yhat_p10": np.clip(p50 + q10, 0.0, None), "yhat_p90": p50 + q90}))
        return pd.concat(out, ignore_index=True)


def served_forecasts(
    features: pd.DataFrame,
    forecaster: TowtForecaster,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model_name: str = "building_energy_lstm",
    model_version: str = "1",
    timezones: dict[str, str] | None = None,
) -> pd.DataFrame:
    """gold.forecasts rows for the hours in [start, end): each issued at the building's local midnight before
    it (UTC midnight without `timezones`), horizon 1..24."""
    window = features[(features["ts"] >= start) & (features["ts"] < end)]
    predicted = forecaster.predict(window)
    if timezones:
        issued = []
        for building_id, g in predicted.groupby("building_id", sort=False):
            local = g["ts"].dt.tz_convert(timezones[str(building_id)])
            issued.append(local.dt.floor("D", ambiguous=True, nonexistent="shift_forward").dt.tz_convert("UTC"))
        issued_at = pd.concat(issued).reindex(predicted.index)
    else:
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
