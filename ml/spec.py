"""What a forecaster sees: the window contract shared by training, export, serving and the client.

Kept free of TensorFlow so that the serving client and DAG files can import it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

TARGET = "energy_kwh"

# Observed up to the forecast origin (the lookback part of a window).
HISTORY_FEATURES: tuple[str, ...] = (
    "energy_kwh",
    "temperature",
    "humidity",
    "solar_radiation",
    "occupancy",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "is_holiday",
)

# Known before the origin for the hours being forecast: calendar and the weather forecast issued before it.
FUTURE_FEATURES: tuple[str, ...] = (
    "forecast_temperature",
    "forecast_humidity",
    "forecast_solar_radiation",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "doy_sin",
    "doy_cos",
    "is_weekend",
    "is_holiday",
)

# Features every building has by construction (the target and the calendar); the others (weather,
# occupancy, indoor climate) come from sensors and sources a building may lack.
ALWAYS_PRESENT: frozenset[str] = frozenset(
    {TARGET, "hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos", "is_weekend", "is_holiday"}
)

# SavedModel signature `serving_default`: inputs and outputs by name, never by position.
INPUT_HISTORY = "history"  # float32 [batch, lookback_h, len(history_features)]
INPUT_FUTURE = "future"  # float32 [batch, horizon_h, len(future_features)]
OUTPUT_MEDIAN = "p50"  # float32 [batch, horizon_h]; with quantiles also "p10" and "p90"
# Signature `window_spec`: never called; its input names spell the features, in order
# (`history_00_energy_kwh`, ..., `future_00_forecast_temperature`, ...), for clients that know only the server.
WINDOW_SPEC_SIGNATURE = "window_spec"


def window_spec_input_names(spec: "WindowSpec") -> list[str]:
    return [f"{INPUT_HISTORY}_{i:02d}_{f}" for i, f in enumerate(spec.history_features)] + [
        f"{INPUT_FUTURE}_{i:02d}_{f}" for i, f in enumerate(spec.future_features)]


def features_from_input_names(names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(history_features, future_features) from a `window_spec` signature's input names."""
    parts: dict[str, list[tuple[int, str]]] = {INPUT_HISTORY: [], INPUT_FUTURE: []}
    for name in names:
        group, _, rest = name.partition("_")
        index, _, feature = rest.partition("_")
        if group in parts and index.isdigit() and feature:
            parts[group].append((int(index), feature))
    return tuple(f for _, f in sorted(parts[INPUT_HISTORY])), tuple(f for _, f in sorted(parts[INPUT_FUTURE]))


@dataclass(frozen=True)
class WindowSpec:
    lookback_h: int = 168
    horizon_h: int = 24
    history_features: tuple[str, ...] = HISTORY_FEATURES
    future_features: tuple[str, ...] = FUTURE_FEATURES
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    target: str = TARGET
    extra: dict = field(default_factory=dict)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"p{round(q * 100)}" for q in self.quantiles) if self.quantiles else (OUTPUT_MEDIAN,)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "WindowSpec":
        raw = json.loads(text)
        for key in ("history_features", "future_features", "quantiles"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


# The day of the year says something only to a model that has seen every part of a year: trained on six
# winter weeks, it would extrapolate into spring from values it never saw.
SEASONAL_FEATURES: frozenset[str] = frozenset({"doy_sin", "doy_cos"})
MIN_DAYS_FOR_SEASON = 365


def spec_for_frame(spec: WindowSpec, frame: "pd.DataFrame") -> WindowSpec:
    """The spec with the features this data cannot give left out: features follow what buildings have.

    A feature stays when every building in `frame` (the training data) has at least one value of it (one
    model serves them all, so it can only ask for what each of them sends); the day-of-year features stay
    when the data spans a year. What was left out is recorded in `extra["dropped_features"]`, which
    travels with the model (MLflow tag, registry, SavedModel).
    """
    import numpy as np
    import pandas as pd

    ts = pd.to_datetime(frame["ts"], utc=True) if len(frame) else None
    whole_year = ts is not None and (ts.max() - ts.min()) >= pd.Timedelta(days=MIN_DAYS_FOR_SEASON)

    def present(column: str) -> bool:
        if column in SEASONAL_FEATURES:
            return whole_year
        if column in ALWAYS_PRESENT:
            return True
        if column not in frame:
            return False
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        has = np.isfinite(values)
        return bool(len(frame)) and bool(frame.assign(_has=has).groupby("building_id", observed=True)["_has"].any().all())

    history = tuple(f for f in spec.history_features if present(f))
    future = tuple(f for f in spec.future_features if present(f))
    dropped = sorted({*spec.history_features, *spec.future_features} - {*history, *future})
    if not dropped and "dropped_features" not in spec.extra:
        return spec
    extra = {**spec.extra, "dropped_features": sorted({*spec.extra.get("dropped_features", []), *dropped})}
    return replace(spec, history_features=history, future_features=future, extra=extra)
