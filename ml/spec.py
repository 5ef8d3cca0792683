"""What a forecaster sees: the window contract shared by training, export, serving and the client.

Kept free of TensorFlow so that the serving client and DAG files can import it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json

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
    "is_weekend",
    "is_holiday",
)

# SavedModel signature `serving_default`: inputs and outputs by name, never by position.
INPUT_HISTORY = "history"  # float32 [batch, lookback_h, len(history_features)]
INPUT_FUTURE = "future"  # float32 [batch, horizon_h, len(future_features)]
OUTPUT_MEDIAN = "p50"  # float32 [batch, horizon_h]; with quantiles also "p10" and "p90"


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
