"""Batch scoring: day-ahead forecasts for every building from the champion SavedModel, in-process.

The online path (applications -> TF Serving -> `ForecastClient`) stays; this is the portfolio path: the
same window building and fallback (`serving.client.forecast_frame`), the same future rows
(`lakehouse.gold.future_features`), but the model is called in the scoring process itself. The SavedModel
is loaded once per Python process (`predictor`), so on Spark each Python worker loads it once and scores
every chunk it is given.

`score_chunk` is the per-building core: a chunk's gold history, silver (for the future rows) and its
sites' weather forecasts in, `gold.forecasts` rows out. Both runners call it (lakehouse/runners.py).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WINDOW_SPEC_SIGNATURE, WindowSpec, features_from_input_names
from wattflow.log import get_logger

log = get_logger(__name__)

_lock = threading.Lock()
_loaded: dict[str, "SavedModelPredictor"] = {}


class SavedModelPredictor:
    """A SavedModel's `serving_default` signature as `predict(history, future) -> (outputs, version)`,
    with the window spec read from the signature (and its `window_spec` signature when exported with one),
    exactly as `ForecastClient.spec()` reads it from TF Serving's metadata."""

    def __init__(self, path: Path, version: int, default_spec: WindowSpec) -> None:
        import tensorflow as tf

        self.path, self.version = Path(path), int(version)
        self._model = tf.saved_model.load(str(path))
        self._signature = self._model.signatures["serving_default"]
        inputs = self._signature.structured_input_signature[1]
        lookback = int(inputs[INPUT_HISTORY].shape[1])
        horizon = int(inputs[INPUT_FUTURE].shape[1])
        outputs = sorted(self._signature.structured_outputs)
        quantiles = tuple(sorted(int(name[1:]) / 100 for name in outputs if name[1:].isdigit()))
        spec = replace(default_spec, lookback_h=lookback, horizon_h=horizon, quantiles=quantiles or default_spec.quantiles)
        if WINDOW_SPEC_SIGNATURE in self._model.signatures:
            names = list(self._model.signatures[WINDOW_SPEC_SIGNATURE].structured_input_signature[1])
            history, future = features_from_input_names(names)
            if history and future:
                spec = replace(spec, history_features=history, future_features=future)
        self.spec = spec

    def predict(self, history: np.ndarray, future: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        import tensorflow as tf

        out = self._signature(**{INPUT_HISTORY: tf.constant(np.asarray(history, dtype=np.float32)),
                                 INPUT_FUTURE: tf.constant(np.asarray(future, dtype=np.float32))})
        return {name: value.numpy() for name, value in out.items()}, self.version


def predictor(path: str | Path, version: int, settings) -> SavedModelPredictor:
    """The SavedModel at `path`, loaded once per process (a Spark Python worker scores many chunks)."""
    key = f"{Path(path).resolve()}@{int(version)}"
    with _lock:
        found = _loaded.get(key)
        if found is None:
            default = WindowSpec(lookback_h=settings.model.lookback_h, horizon_h=settings.model.horizon_h,
                                 quantiles=tuple(settings.model.quantiles))
            found = SavedModelPredictor(Path(path), version, default)
            _loaded[key] = found
            log.info("batch_scoring.model_loaded", path=str(path), version=int(version))
        return found


def score_chunk(gold: pd.DataFrame, silver: pd.DataFrame, forecasts: pd.DataFrame, building_ids: Sequence[str],
                origins: Sequence[pd.Timestamp], registry, settings, *, model: SavedModelPredictor,
                scaling: dict | None) -> pd.DataFrame:
    """Forecasts for each building of the chunk and each origin, in `gold.forecasts`' columns (no date).

    `gold`: the chunk's features from `lookback_h + 48` hours before the first origin; `silver`: its
    hours from `features.margin_h` before it (future rows' persistence fallback); `forecasts`: weather
    forecast rows of its sites. Pure apart from the model call.
    """
    from lakehouse.gold import future_features
    from serving.client import forecast_frame

    spec = model.spec
    lookback = pd.Timedelta(hours=settings.model.lookback_h + 48)
    gold = gold.assign(ts=pd.to_datetime(gold["ts"], utc=True))
    rows = []
    for origin in origins:
        origin_ts = pd.Timestamp(origin).tz_convert("UTC")
        for building_id in sorted(building_ids):
            history = gold[(gold["building_id"] == building_id) & (gold["ts"] >= origin_ts - lookback)
                           & (gold["ts"] < origin_ts)].sort_values("ts").reset_index(drop=True)
            if history.empty:
                continue
            site = registry.get(building_id).site_id
            future = future_features(silver, forecasts[forecasts["site_id"] == site], registry, settings, building_id,
                                     origin_ts, scaling=scaling)
            result = forecast_frame(building_id, history, future, origin_ts, spec, model.predict)
            result["issued_at"] = origin_ts
            rows.append(result)
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    return forecast_rows(out, settings.model.model_name)


def forecast_rows(out: pd.DataFrame, model_name: str) -> pd.DataFrame:
    """`forecast_frame` results (with `issued_at`) as `gold.forecasts` rows: horizon, quantile names, model."""
    out = out.copy()
    out["horizon_h"] = ((out["ts"] - out["issued_at"]) / pd.Timedelta(hours=1)).astype("int32") + 1
    out = out.rename(columns={"p10": "yhat_p10", "p50": "yhat_p50", "p90": "yhat_p90"})
    out["model_name"] = model_name
    out["model_version"] = out["model_version"].astype("string").fillna("fallback")
    return out
