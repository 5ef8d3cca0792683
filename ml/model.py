"""The Keras 3 multi-horizon LSTM forecaster and its SavedModel export.

Architecture: the most recent `encoder_hours` of the history go through Normalization and an encoder
LSTM stack; its final state is repeated over the horizon and concatenated, per horizon hour, with the
normalized known-future inputs (weather forecast, calendar) and with terms derived inside the model from
the whole lookback (`DecoderTerms`: the same hour on each of the last days, the forecast temperature's
change since then, TOWT-style temperature hinges and their weighting by last days' occupancy). A small
LSTM decodes over the horizon; per output name, a Dense head on it plus a linear head on the decoder
inputs (so temperature effects extrapolate linearly beyond the training range) give the forecast.

Each forecast is the sum of two parts:
- a *relative* part, learnt relative to the window's energy level (mean energy over its lookback,
  `EnergyLevel`): it carries the building's scale and regime (open, closed, after a retrofit), so one
  network serves buildings of any size;
- an *absolute* part in kWh (scaled by the training targets' spread): weather-driven load is additive in
  kWh, and relative to a weekly level that itself moves with the weather it is a far harder function.
Two models share the layers:
- the *training* model outputs the forecast relative to the level, standardized (the loss is
  scale-free across buildings and trials);
- the *serving* model returns kWh, so the exported SavedModel takes raw feature values. Normalization
  statistics are adapted on the training windows and live inside the model, so nothing outside it
  needs to scale anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WINDOW_SPEC_SIGNATURE, WindowSpec, window_spec_input_names
from ml.windows import Windows

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


@dataclass(frozen=True)
class ModelParams:
    units: int = 64
    layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    patience: int = 5
    seed: int = 42
    # The encoder LSTM reads only the most recent hours; older hours reach the decoder as same-hour lags.
    encoder_hours: int = 48
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, model_settings: Any, **overrides: Any) -> "ModelParams":
        values = {k: getattr(model_settings, k) for k in ("units", "layers", "dropout", "learning_rate", "batch_size", "epochs")}
        values["patience"] = getattr(model_settings, "early_stopping_patience", cls.patience)
        values["encoder_hours"] = getattr(model_settings, "encoder_hours", cls.encoder_hours)
        values.update(overrides)
        return cls(**values)


@keras.saving.register_keras_serializable(package="wattflow")
class PinballLoss(keras.losses.Loss):
    """Quantile (pinball) loss: q·e for under-forecasts, (q−1)·e for over-forecasts, e = y − ŷ."""

    def __init__(self, quantile: float, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or f"pinball_{quantile}", **kwargs)
        self.quantile = float(quantile)

    def call(self, y_true, y_pred):
        # A NaN target is an hour that is not valid (flagged, imputed, missing): it carries no loss, and a
        # window's weight is its share of valid hours.
        known = keras.ops.logical_not(keras.ops.isnan(y_true))
        error = keras.ops.where(known, y_true, y_pred) - y_pred
        loss = keras.ops.maximum(self.quantile * error, (self.quantile - 1.0) * error)
        return keras.ops.mean(keras.ops.where(known, loss, keras.ops.zeros_like(loss)), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantile": self.quantile}


# Floor of a window's energy level, so a building at zero for a week does not divide by zero.
LEVEL_FLOOR_KWH = 1e-3


@keras.saving.register_keras_serializable(package="wattflow")
class EnergyLevel(keras.layers.Layer):
    """Per-window scale: the mean energy over the lookback (floored), and the energy relative to it.

    Buildings differ by orders of magnitude; predicting energy relative to the window's own level lets one
    network serve them all (DeepAR's mean scaling), and keeps the exported model free of per-building state.
    """

    def __init__(self, energy_index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.energy_index = int(energy_index)

    def call(self, history):
        energy = history[:, :, self.energy_index]
        level = keras.ops.maximum(keras.ops.mean(energy, axis=1, keepdims=True), LEVEL_FLOOR_KWH)
        relative = keras.ops.expand_dims(energy / level, axis=-1)
        return level, relative

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1), (input_shape[0], input_shape[1], 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "energy_index": self.energy_index}


# Knots (degC) of the forecast temperature's hinge terms max(0, T - k), max(0, k - T): TOWT's segments.
TEMPERATURE_KNOTS_C = (5.0, 10.0, 15.0, 20.0, 25.0)
# Same-hour lags reach back this many days at most (one week: the weekly cycle).
MAX_LAG_DAYS = 7


def lag_days(spec: WindowSpec) -> int:
    """Whole days of same-hour lags the lookback holds."""
    return min(MAX_LAG_DAYS, spec.lookback_h // 24)


@keras.saving.register_keras_serializable(package="wattflow")
class DecoderTerms(keras.layers.Layer):
    """Per-horizon-hour inputs derived from the raw history and future, for the decoder and the linear head.

    With D = min(7, lookback // 24) days, for each horizon step h (hour of day h mod 24):
    - energy relative to the window's level at the same hour 1..D days before: the daily and weekly
      profile handed straight to the decoder, so it need not survive the encoder's state;
    - forecast temperature at h minus the observed temperature at those hours (/10 K): how much warmer or
      colder than on the days the profile comes from;
    - hinges max(0, T - k), max(0, k - T) of the forecast temperature at TEMPERATURE_KNOTS_C (/10 K);
    - occupancy at the same hours as a share of the lookback's peak, and the hinges weighted by the share
      one day and D days before: HVAC runs harder while a building is occupied (TOWT's occupied and
      unoccupied modes), and last days' occupancy is the schedule known at the origin.
    Parts whose columns the spec lacks (index -1) are left out.
    """

    def __init__(self, lookback_h: int, horizon_h: int, days: int, energy_index: int, temperature_index: int,
                 occupancy_index: int, forecast_temperature_index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lookback_h, self.horizon_h, self.days = int(lookback_h), int(horizon_h), int(days)
        self.energy_index, self.temperature_index = int(energy_index), int(temperature_index)
        self.occupancy_index, self.forecast_temperature_index = int(occupancy_index), int(forecast_temperature_index)
        steps = np.arange(self.horizon_h)[:, None] % 24
        back = 24 * np.arange(1, self.days + 1)[None, :]
        self._lag_index = (self.lookback_h - back + steps).reshape(-1).astype("int32")
        self._knots = np.asarray(TEMPERATURE_KNOTS_C, np.float32)[None, None, :]

    def _same_hour(self, series):
        """[n, lookback] -> [n, horizon, days]: the value at the same hour 1..days days before."""
        picked = keras.ops.take(series, self._lag_index, axis=1)
        return keras.ops.reshape(picked, (-1, self.horizon_h, self.days))

    def call(self, history, future):
        parts = []
        if self.days and self.energy_index >= 0:
            energy = history[:, :, self.energy_index]
            level = keras.ops.maximum(keras.ops.mean(energy, axis=1, keepdims=True), LEVEL_FLOOR_KWH)
            parts.append(self._same_hour(energy / level))
        if self.forecast_temperature_index >= 0:
            forecast = future[:, :, self.forecast_temperature_index : self.forecast_temperature_index + 1]
            if self.days and self.temperature_index >= 0:
                parts.append((forecast - self._same_hour(history[:, :, self.temperature_index])) / 10.0)
            hinges = keras.ops.concatenate([keras.ops.relu(forecast - self._knots), keras.ops.relu(self._knots - forecast)], axis=-1) / 10.0
            parts.append(hinges)
            if self.days and self.occupancy_index >= 0:
                occupancy = history[:, :, self.occupancy_index]
                share = occupancy / keras.ops.maximum(keras.ops.max(occupancy, axis=1, keepdims=True), 1e-6)
                lags = self._same_hour(share)
                parts += [lags, hinges * lags[:, :, :1], hinges * lags[:, :, -1:]]
        return keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, history_shape, future_shape):
        return (history_shape[0], self.horizon_h, self.width)

    @property
    def width(self) -> int:
        n_hinges = 2 * len(TEMPERATURE_KNOTS_C)
        width = self.days if self.days and self.energy_index >= 0 else 0
        if self.forecast_temperature_index >= 0:
            width += self.days if self.days and self.temperature_index >= 0 else 0
            width += n_hinges
            width += self.days + 2 * n_hinges if self.days and self.occupancy_index >= 0 else 0
        return width

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lookback_h": self.lookback_h, "horizon_h": self.horizon_h, "days": self.days,
                "energy_index": self.energy_index, "temperature_index": self.temperature_index,
                "occupancy_index": self.occupancy_index, "forecast_temperature_index": self.forecast_temperature_index}


def decoder_terms(spec: WindowSpec) -> DecoderTerms | None:
    """The spec's DecoderTerms, or None when its features give none."""

    def index(features: tuple[str, ...], name: str) -> int:
        return features.index(name) if name in features else -1

    layer = DecoderTerms(
        spec.lookback_h, spec.horizon_h, lag_days(spec),
        energy_index=index(spec.history_features, spec.target),
        temperature_index=index(spec.history_features, "temperature"),
        occupancy_index=index(spec.history_features, "occupancy"),
        forecast_temperature_index=index(spec.future_features, "forecast_temperature"),
        name="decoder_terms",
    )
    return layer if layer.width else None


@keras.saving.register_keras_serializable(package="wattflow")
class RelativePlusAbsolute(keras.layers.Layer):
    """The training output: the standardized relative part plus the absolute part expressed in the same
    units, z_rel + kwh_scale * z_abs / (level * target_std), so one loss trains both."""

    def __init__(self, kwh_scale: float, target_std: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kwh_scale, self.target_std = float(kwh_scale), float(target_std)

    def call(self, z_relative, z_absolute, level):
        return z_relative + self.kwh_scale * z_absolute / (level * self.target_std)

    def compute_output_shape(self, z_relative_shape, z_absolute_shape, level_shape):
        return z_relative_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kwh_scale": self.kwh_scale, "target_std": self.target_std}


@keras.saving.register_keras_serializable(package="wattflow")
class QuantileCalibration(keras.layers.Layer):
    """Scales the p10 and p90 bands around p50 by factors fitted after training (`calibrate_quantiles`).

    Pinball-trained quantiles of a network that early-stops are rarely calibrated: the band is as wide as
    the training hours' errors, not the unseen ones'. The factors are weights of the serving model, so the
    exported SavedModel serves calibrated bands and nothing outside it has to know.
    """

    def build(self, p10_shape, p50_shape, p90_shape):
        self.lower = self.add_weight(name="lower", shape=(), initializer="ones", trainable=False)
        self.upper = self.add_weight(name="upper", shape=(), initializer="ones", trainable=False)

    def call(self, p10, p50, p90):
        return p50 - self.lower * (p50 - p10), p50 + self.upper * (p90 - p50)

    def compute_output_shape(self, p10_shape, p50_shape, p90_shape):
        return p10_shape, p90_shape


def quantile_scales(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, valid: np.ndarray,
                    *, lower_q: float = 0.1, upper_q: float = 0.9) -> tuple[float, float]:
    """Factors so that `lower_q` of the actuals fall below p50 - f_lo (p50 - p10), `1 - upper_q` above p50 + f_hi (p90 - p50)."""
    eps = 1e-6
    ok = valid & np.isfinite(actual) & np.isfinite(p10) & np.isfinite(p90)
    if ok.sum() < 24:
        return 1.0, 1.0
    below = (p50[ok] - actual[ok]) / np.maximum(p50[ok] - p10[ok], eps)
    above = (actual[ok] - p50[ok]) / np.maximum(p90[ok] - p50[ok], eps)
    lower = float(np.quantile(below, 1.0 - lower_q))
    upper = float(np.quantile(above, upper_q))
    return float(np.clip(lower, 0.1, 10.0)), float(np.clip(upper, 0.1, 10.0))


def calibrate_quantiles(forecaster: "Forecaster", windows: Windows) -> tuple[float, float] | None:
    """Fit the serving model's band factors on `windows` (held out from training); None without a band."""
    layer = next((l for l in forecaster.serving_model.layers if isinstance(l, QuantileCalibration)), None)
    if layer is None or len(windows) == 0:
        return None
    layer.lower.assign(1.0)
    layer.upper.assign(1.0)
    raw = forecaster.predict(windows)
    lower_q, upper_q = min(forecaster.spec.quantiles), max(forecaster.spec.quantiles)
    scales = quantile_scales(windows.target, raw["p10"], raw["p50"], raw["p90"], windows.valid, lower_q=lower_q, upper_q=upper_q)
    layer.lower.assign(scales[0])
    layer.upper.assign(scales[1])
    return scales


def window_level(windows: Windows, spec: WindowSpec) -> np.ndarray:
    """The numpy twin of EnergyLevel for training targets: [n, 1]."""
    if spec.target not in spec.history_features:
        return np.ones((len(windows), 1), np.float32)
    energy = windows.history[:, :, spec.history_features.index(spec.target)]
    return np.maximum(energy.mean(axis=1, keepdims=True), LEVEL_FLOOR_KWH).astype(np.float32)


@dataclass
class Forecaster:
    """A trained network: the training model (standardized outputs) and the serving model (kWh)."""

    spec: WindowSpec
    params: ModelParams
    training_model: keras.Model
    serving_model: keras.Model
    target_mean: float
    target_std: float
    history: dict[str, list[float]] = field(default_factory=dict)

    def predict(self, windows: Windows, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Forecasts in kWh per output name, [n, horizon]."""
        if len(windows) == 0:
            return {name: np.zeros((0, self.spec.horizon_h), np.float32) for name in self.spec.output_names}
        out = self.serving_model.predict(
            {INPUT_HISTORY: windows.history, INPUT_FUTURE: windows.future}, batch_size=batch_size, verbose=0
        )
        return {name: np.asarray(out[name]) for name in self.spec.output_names}

    def point_forecast(self, windows: Windows) -> np.ndarray:
        return self.predict(windows)["p50"]


def build_forecaster(spec: WindowSpec, params: ModelParams, train: Windows) -> Forecaster:
    """Layers with Normalization adapted on `train` and target statistics taken from its valid hours."""
    keras.utils.set_random_seed(params.seed)
    n_hist, n_fut = len(spec.history_features), len(spec.future_features)
    history_in = keras.Input(shape=(spec.lookback_h, n_hist), name=INPUT_HISTORY, dtype="float32")
    future_in = keras.Input(shape=(spec.horizon_h, n_fut), name=INPUT_FUTURE, dtype="float32")

    history_norm = keras.layers.Normalization(axis=-1, name="history_normalization")
    future_norm = keras.layers.Normalization(axis=-1, name="future_normalization")
    history_norm.adapt(train.history.reshape(-1, n_hist))
    future_norm.adapt(train.future.reshape(-1, n_fut))
    relative_target = (train.target / window_level(train, spec))[train.valid]
    target_mean = float(np.mean(relative_target))
    target_std = float(np.std(relative_target)) or 1.0
    kwh_scale = float(np.std(train.target[train.valid])) or 1.0

    x = history_norm(history_in)
    level = None
    if spec.target in spec.history_features:
        level, relative = EnergyLevel(spec.history_features.index(spec.target), name="energy_level")(history_in)
        x = keras.layers.Concatenate(axis=-1, name="history_and_relative_energy")([x, relative])
    if 0 < params.encoder_hours < spec.lookback_h:
        x = keras.layers.Cropping1D((spec.lookback_h - params.encoder_hours, 0), name="recent_hours")(x)
    for i in range(params.layers):
        last = i == params.layers - 1
        x = keras.layers.LSTM(params.units, return_sequences=not last, dropout=params.dropout, name=f"encoder_{i}")(x)
    context = keras.layers.RepeatVector(spec.horizon_h, name="context_over_horizon")(x)
    per_hour = [context, future_norm(future_in)]
    terms = decoder_terms(spec)
    if terms is not None:
        per_hour.append(terms(history_in, future_in))
    decoder_in = keras.layers.Concatenate(axis=-1, name="decoder_inputs")(per_hour)
    y = keras.layers.LSTM(params.units, return_sequences=True, name="decoder")(decoder_in)
    if params.dropout:
        y = keras.layers.Dropout(params.dropout, name="decoder_dropout")(y)
    y = keras.layers.Dense(params.units, activation="relu", name="decoder_dense")(y)

    def head(name: str, zero: bool = False) -> Any:
        """A Dense head on the decoder plus a linear head on its inputs, [n, horizon]."""
        init = "zeros" if zero else "glorot_uniform"
        deep = keras.layers.Dense(1, kernel_initializer=init, name=f"{name}_deep")(y)
        linear = keras.layers.Dense(1, kernel_initializer=init, name=f"{name}_linear")(decoder_in)
        return keras.layers.Reshape((spec.horizon_h,), name=f"{name}_std")(keras.layers.Add(name=f"{name}_sum")([deep, linear]))

    standardized: dict[str, Any] = {}
    served: dict[str, Any] = {}
    for name in spec.output_names:
        z = head(name)
        if level is None:
            standardized[name] = z
            served[name] = keras.layers.Rescaling(scale=target_std, offset=target_mean, name=name)(z)
            continue
        # The absolute part starts at zero: training begins from the plain level-relative forecaster.
        z_abs = head(f"{name}_absolute", zero=True)
        standardized[name] = RelativePlusAbsolute(kwh_scale, target_std, name=f"{name}_total")(z, z_abs, level)
        ratio = keras.layers.Rescaling(scale=target_std, offset=target_mean, name=f"{name}_relative")(z)
        relative_kwh = keras.layers.Multiply(name=f"{name}_relative_kwh")([ratio, level])
        absolute_kwh = keras.layers.Rescaling(scale=kwh_scale, name=f"{name}_absolute_kwh")(z_abs)
        served[name] = keras.layers.Add(name=name)([relative_kwh, absolute_kwh])

    if {"p10", "p50", "p90"} <= set(served):
        served["p10"], served["p90"] = QuantileCalibration(name="quantile_calibration")(served["p10"], served["p50"], served["p90"])
    inputs = {INPUT_HISTORY: history_in, INPUT_FUTURE: future_in}
    training_model = keras.Model(inputs=inputs, outputs=standardized, name="forecaster_training")
    serving_model = keras.Model(inputs=inputs, outputs=served, name="forecaster")
    # Pinball at 0.5 is half the absolute error; unlike Keras' MAE it skips the NaN (invalid) hours.
    quantiles = spec.quantiles or (0.5,)
    losses = {f"p{round(q * 100)}": PinballLoss(q) for q in quantiles}
    training_model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=losses)
    return Forecaster(spec, params, training_model, serving_model, target_mean, target_std)


def fit(
    forecaster: Forecaster,
    train: Windows,
    validation: Windows | None,
    callbacks: list[Any] | None = None,
    verbose: int = 0,
) -> Forecaster:
    """Train (invalid target hours carry no loss); early-stop on validation loss and keep the best weights."""
    from ml.windows import as_tf_dataset

    names = forecaster.spec.output_names
    spec = forecaster.spec
    kwargs = dict(target_mean=forecaster.target_mean, target_std=forecaster.target_std, batch_size=forecaster.params.batch_size)
    train_ds = as_tf_dataset(train, names, shuffle=True, seed=forecaster.params.seed, level=window_level(train, spec), **kwargs)
    all_callbacks = list(callbacks or [])
    val_ds = None
    if validation is not None and len(validation):
        val_ds = as_tf_dataset(validation, names, shuffle=False, level=window_level(validation, spec), **kwargs)
        all_callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=forecaster.params.patience, restore_best_weights=True)
        )
    # shuffle=False: the training Dataset shuffles itself (as_tf_dataset, seeded); Keras ignores, and warns
    # about, its own shuffle for a tf.data input.
    history = forecaster.training_model.fit(
        train_ds, validation_data=val_ds, epochs=forecaster.params.epochs, callbacks=all_callbacks, verbose=verbose,
        shuffle=False,
    )
    forecaster.history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return forecaster


class SignatureMismatch(RuntimeError):
    """The exported SavedModel's serving signature is not the contract of ml/spec.py."""


def export_saved_model(model: Forecaster | keras.Model, path: str | Path, spec: WindowSpec | None = None) -> Path:
    """Write a SavedModel whose `serving_default` takes `history`/`future` (float32, raw values) and returns
    the spec's output names (kWh); the signature is read back and checked before returning."""
    import tensorflow as tf

    if isinstance(model, Forecaster):
        spec, keras_model = model.spec, model.serving_model
    else:
        keras_model = model
        if spec is None:
            raise ValueError("export_saved_model needs the WindowSpec when given a bare Keras model")
    path = Path(path)
    history_spec = tf.TensorSpec([None, spec.lookback_h, len(spec.history_features)], tf.float32, name=INPUT_HISTORY)
    future_spec = tf.TensorSpec([None, spec.horizon_h, len(spec.future_features)], tf.float32, name=INPUT_FUTURE)
    names = spec.output_names

    def serve(history, future):
        with _inference_only(keras_model):
            outputs = keras_model({INPUT_HISTORY: history, INPUT_FUTURE: future}, training=False)
        return {name: tf.identity(outputs[name], name=name) for name in names}

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[history_spec, future_spec])
    add_window_spec_signature(archive, spec)
    archive.write_out(str(path), verbose=False)
    check_signature(path, spec)
    return path


@contextmanager
def _inference_only(model: keras.Model) -> Iterator[None]:
    """While the serving function is traced, the recurrent layers' dropout rates read 0.

    Keras 3's RNN.call builds the dropout masks before its loop whatever `training` is (to keep the loop
    stateless for JAX), and a mask draws from the layer's seed generator, whose state variable is read and
    written back. In a trace with training=False the mask is never used, but the write stays in the graph
    (automatic control dependencies run every stateful op): each serving call then ran a random draw and an
    AssignVariableOp, the exported model could not be frozen, and an XLA-compiled call had to write a
    resource variable back. With the rates at 0 while tracing no mask is built: the same outputs (dropout is
    the identity at inference) and a call graph that only reads variables. The rates are put back after.
    """
    cells = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.RNN):
            cell = layer.cell
            cells.extend(getattr(cell, "cells", None) or [cell])
    saved = [(cell, cell.dropout, cell.recurrent_dropout) for cell in cells if hasattr(cell, "recurrent_dropout")]
    try:
        for cell, _, _ in saved:
            cell.dropout = cell.recurrent_dropout = 0.0
        yield
    finally:
        for cell, dropout, recurrent_dropout in saved:
            cell.dropout, cell.recurrent_dropout = dropout, recurrent_dropout


def add_window_spec_signature(archive: Any, spec: WindowSpec) -> None:
    """A `window_spec` signature whose input names spell the feature columns in order.

    TF Serving's GetModelMetadata returns every signature's inputs, so a client learns which columns of
    `history` and `future` the model takes (features follow what a building has) from the server alone.
    It is never called; its one output is the count of features.
    """
    import tensorflow as tf

    names = window_spec_input_names(spec)
    specs = [tf.TensorSpec([None], tf.float32, name=n) for n in names]

    def describe(*_features):
        return {"n_features": tf.constant(len(names), tf.int32)}

    archive.add_endpoint(name=WINDOW_SPEC_SIGNATURE, fn=describe, input_signature=specs)


def check_signature(path: str | Path, spec: WindowSpec) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise SignatureMismatch(f"{path}: no serving_default signature (has {sorted(loaded.signatures)})")
    signature = loaded.signatures["serving_default"]
    inputs = set(signature.structured_input_signature[1])
    outputs = set(signature.structured_outputs)
    if inputs != {INPUT_HISTORY, INPUT_FUTURE} or outputs != set(spec.output_names):
        raise SignatureMismatch(
            f"{path}: serving_default takes {sorted(inputs)} and returns {sorted(outputs)}; "
            f"the contract is {[INPUT_HISTORY, INPUT_FUTURE]} -> {list(spec.output_names)}"
        )
