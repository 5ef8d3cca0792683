"""The Keras 3 multi-horizon LSTM forecaster and its SavedModel export.

Architecture: the history (lookback × HISTORY_FEATURES) goes through Normalization and an encoder LSTM
stack; its final state is repeated over the horizon, concatenated with the normalized known-future
inputs (weather forecast, calendar) and decoded by a small LSTM running over the horizon; one Dense
head per output name gives a standardized forecast per hour.

Targets are learnt relative to each window's energy level (mean energy over its lookback, computed
inside the model by `EnergyLevel`), then standardized. Two models share the layers:
- the *training* model outputs the standardized relative target (the loss is scale-free across
  buildings and trials);
- the *serving* model appends Rescaling (× std + mean) and × level per head, so the exported
  SavedModel takes raw feature values and returns kWh. Normalization statistics are adapted on the
  training windows and live inside the model, so nothing outside it needs to scale anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WindowSpec
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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, model_settings: Any, **overrides: Any) -> "ModelParams":
        values = {k: getattr(model_settings, k) for k in ("units", "layers", "dropout", "learning_rate", "batch_size", "epochs")}
        values["patience"] = getattr(model_settings, "early_stopping_patience", cls.patience)
        values.update(overrides)
        return cls(**values)


@keras.saving.register_keras_serializable(package="wattflow")
class PinballLoss(keras.losses.Loss):
    """Quantile (pinball) loss: q·e for under-forecasts, (q−1)·e for over-forecasts, e = y − ŷ."""

    def __init__(self, quantile: float, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or f"pinball_{quantile}", **kwargs)
        self.quantile = float(quantile)

    def call(self, y_true, y_pred):
        error = y_true - y_pred
        return keras.ops.mean(keras.ops.maximum(self.quantile * error, (self.quantile - 1.0) * error), axis=-1)

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
    """Layers with Normalization adapted on `train` (valid windows only) and target statistics taken from it."""
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

    x = history_norm(history_in)
    level = None
    if spec.target in spec.history_features:
        level, relative = EnergyLevel(spec.history_features.index(spec.target), name="energy_level")(history_in)
        x = keras.layers.Concatenate(axis=-1, name="history_and_relative_energy")([x, relative])
    for i in range(params.layers):
        last = i == params.layers - 1
        x = keras.layers.LSTM(params.units, return_sequences=not last, dropout=params.dropout, name=f"encoder_{i}")(x)
    context = keras.layers.RepeatVector(spec.horizon_h, name="context_over_horizon")(x)
    decoder_in = keras.layers.Concatenate(axis=-1, name="context_and_future")([context, future_norm(future_in)])
    y = keras.layers.LSTM(params.units, return_sequences=True, name="decoder")(decoder_in)
    if params.dropout:
        y = keras.layers.Dropout(params.dropout, name="decoder_dropout")(y)
    y = keras.layers.Dense(params.units, activation="relu", name="decoder_dense")(y)

    standardized: dict[str, Any] = {}
    served: dict[str, Any] = {}
    for name in spec.output_names:
        head = keras.layers.Dense(1, name=f"{name}_head")(y)
        z = keras.layers.Reshape((spec.horizon_h,), name=f"{name}_std")(head)
        standardized[name] = z
        if level is None:
            served[name] = keras.layers.Rescaling(scale=target_std, offset=target_mean, name=name)(z)
        else:
            ratio = keras.layers.Rescaling(scale=target_std, offset=target_mean, name=f"{name}_relative")(z)
            served[name] = keras.layers.Multiply(name=name)([ratio, level])

    inputs = {INPUT_HISTORY: history_in, INPUT_FUTURE: future_in}
    training_model = keras.Model(inputs=inputs, outputs=standardized, name="forecaster_training")
    serving_model = keras.Model(inputs=inputs, outputs=served, name="forecaster")
    if spec.quantiles:
        losses = {f"p{round(q * 100)}": PinballLoss(q) for q in spec.quantiles}
    else:
        losses = {"p50": keras.losses.MeanAbsoluteError()}
    training_model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=losses)
    return Forecaster(spec, params, training_model, serving_model, target_mean, target_std)


def fit(
    forecaster: Forecaster,
    train: Windows,
    validation: Windows | None,
    callbacks: list[Any] | None = None,
    verbose: int = 0,
) -> Forecaster:
    """Train on fully valid windows; early-stop on validation loss and keep the best weights."""
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
    history = forecaster.training_model.fit(
        train_ds, validation_data=val_ds, epochs=forecaster.params.epochs, callbacks=all_callbacks, verbose=verbose
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
        outputs = keras_model({INPUT_HISTORY: history, INPUT_FUTURE: future}, training=False)
        return {name: tf.identity(outputs[name], name=name) for name in names}

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[history_spec, future_spec])
    archive.write_out(str(path), verbose=False)
    check_signature(path, spec)
    return path


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
