"""The LSTM learns a simulated office (weekday schedule, weather-driven HVAC), beats persistence, and exports
the serving contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.backtest import backtest
from ml.model import ModelParams, export_saved_model
from ml.pipeline import train_model
from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WindowSpec
from lakehouse.simulator import FaultConfig
from ml.synthetic import synthetic_gold_features

SPEC = WindowSpec(lookback_h=48, horizon_h=24)
PARAMS = ModelParams(units=32, layers=1, dropout=0.0, learning_rate=5e-3, batch_size=32, epochs=12, patience=4)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # b01 is the simulator's Berlin office; gaps and spikes in its meter leave a few invalid hours in gold.
    return synthetic_gold_features(("b01",), days=84, faults=FaultConfig.only("gap", "spike"))


@pytest.fixture(scope="module")
def trained(frame: pd.DataFrame):
    train_end = pd.Timestamp("2024-03-11", tz="UTC")  # 10 weeks to learn from, 2 to backtest
    return train_model(frame, SPEC, PARAMS, train_end=train_end, stride_h=6)


def test_lstm_beats_persistence_on_a_simulated_office(frame: pd.DataFrame, trained) -> None:
    result = backtest(frame, {"model": trained.predictor()}, start=trained.train_end)
    model, persistence = result.accuracy["model"], result.accuracy["persistence_24h"]
    assert result.n_hours >= 13 * 24 - 10  # two weeks of origins, a few invalid hours out
    assert model.mae < 0.8 * persistence.mae, (model, persistence)
    assert model.cv_rmse < 0.2
    # The model saw nothing from the backtest period: every training window ends before train_end.
    assert trained.n_train_windows + trained.n_validation_windows <= (70 - 2) * 4
    # All three forecasts are scored on the very same hours.
    assert result.accuracy["model"].n_hours == result.accuracy["seasonal_naive_168h"].n_hours == result.n_hours


def test_quantiles_are_ordered_on_average(frame: pd.DataFrame, trained) -> None:
    from ml.windows import make_windows

    windows = make_windows(frame, trained.spec, start=trained.train_end)
    out = trained.forecaster.predict(windows)
    assert set(out) == {"p10", "p50", "p90"}
    assert (out["p10"].mean() < out["p50"].mean() < out["p90"].mean())


def test_saved_model_signature_and_values(tmp_path: Path, frame: pd.DataFrame, trained) -> None:
    import tensorflow as tf

    from ml.windows import make_windows

    path = export_saved_model(trained.forecaster, tmp_path / "1")
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert set(inputs) == {INPUT_HISTORY, INPUT_FUTURE}
    assert inputs[INPUT_HISTORY].shape.as_list() == [None, 48, len(trained.spec.history_features)]
    assert inputs[INPUT_FUTURE].shape.as_list() == [None, 24, len(trained.spec.future_features)]
    assert inputs[INPUT_HISTORY].dtype == tf.float32
    assert set(signature.structured_outputs) == {"p10", "p50", "p90"}
    windows = make_windows(frame, trained.spec, start=trained.train_end).take(slice(0, 3))
    served = signature(history=tf.constant(windows.history), future=tf.constant(windows.future))
    # Raw feature values in, kWh out: the scaling lives inside the exported model.
    np.testing.assert_allclose(served["p50"].numpy(), trained.forecaster.predict(windows)["p50"], rtol=1e-4, atol=1e-3)
    actual = float(np.nanmean(np.where(windows.valid, windows.target, np.nan)))
    assert 0.7 * actual < float(served["p50"].numpy().mean()) < 1.3 * actual


def test_point_model_exports_p50_only(tmp_path: Path, frame: pd.DataFrame) -> None:
    import tensorflow as tf

    spec = WindowSpec(lookback_h=24, horizon_h=24, quantiles=())
    point = train_model(frame.iloc[: 24 * 20], spec, ModelParams(units=8, epochs=1, batch_size=16), stride_h=24)
    signature = tf.saved_model.load(str(export_saved_model(point.forecaster, tmp_path / "1"))).signatures["serving_default"]
    assert set(signature.structured_outputs) == {"p50"}


def test_pinball_loss_skips_invalid_hours() -> None:
    from ml.model import PinballLoss

    loss = PinballLoss(0.9)
    y_true = np.array([[1.0, np.nan, 3.0, np.nan]], np.float32)
    y_pred = np.array([[0.0, 100.0, 4.0, -100.0]], np.float32)
    # Under by 1 costs 0.9, over by 1 costs 0.1; the NaN hours cost nothing, whatever was forecast.
    assert float(loss(y_true, y_pred)) == pytest.approx((0.9 + 0.1) / 4)


def test_decoder_terms_take_the_same_hour_on_previous_days() -> None:
    from ml.model import TEMPERATURE_KNOTS_C, decoder_terms

    spec = WindowSpec(lookback_h=72, horizon_h=24)
    n_hist, n_fut = len(spec.history_features), len(spec.future_features)
    history = np.zeros((1, 72, n_hist), np.float32)
    hours = np.arange(72, dtype=np.float32)
    history[0, :, spec.history_features.index("energy_kwh")] = hours + 1.0
    history[0, :, spec.history_features.index("temperature")] = hours / 10.0
    history[0, :, spec.history_features.index("occupancy")] = np.where(hours % 24 < 12, 50.0, 0.0)
    future = np.zeros((1, 24, n_fut), np.float32)
    future[0, :, spec.future_features.index("forecast_temperature")] = 30.0
    terms = decoder_terms(spec)
    out = np.asarray(terms(history, future))[0]
    assert out.shape == (24, terms.width)
    days, n_hinges = 3, 2 * len(TEMPERATURE_KNOTS_C)
    level = (hours + 1.0).mean()
    for step in (0, 13, 23):
        # energy relative to the level at the same hour 1, 2, 3 days before the horizon hour
        np.testing.assert_allclose(out[step, :days], [(72 - 24 * d + step + 1) / level for d in (1, 2, 3)], rtol=1e-5)
        # forecast minus observed temperature at those hours, in tens of kelvin
        np.testing.assert_allclose(out[step, days : 2 * days], [(30.0 - (72 - 24 * d + step) / 10.0) / 10 for d in (1, 2, 3)], rtol=1e-5)
    hinges = out[0, 2 * days : 2 * days + n_hinges]
    np.testing.assert_allclose(hinges, [(30.0 - k) / 10 for k in TEMPERATURE_KNOTS_C] + [0.0] * len(TEMPERATURE_KNOTS_C))
    occupied = out[:, 2 * days + n_hinges : 3 * days + n_hinges]
    np.testing.assert_array_equal(occupied[:12], 1.0)  # mornings were occupied every day
    np.testing.assert_array_equal(occupied[12:], 0.0)
    weighted = out[:, 3 * days + n_hinges :]
    np.testing.assert_allclose(weighted[0], np.concatenate([hinges, hinges]), rtol=1e-6)
    np.testing.assert_array_equal(weighted[20], 0.0)  # no HVAC term for hours that were empty


def test_forecast_adds_an_absolute_part_to_the_level_relative_one(frame: pd.DataFrame, trained) -> None:
    import keras

    from ml.windows import make_windows

    windows = make_windows(frame, trained.spec, start=trained.train_end).take(slice(0, 4))
    model = trained.forecaster.serving_model
    inputs = {INPUT_HISTORY: windows.history, INPUT_FUTURE: windows.future}

    def part(layer: str) -> np.ndarray:
        return np.asarray(keras.Model(model.inputs, model.get_layer(layer).output)(inputs))

    relative, absolute = part("p50_relative_kwh"), part("p50_absolute_kwh")
    np.testing.assert_allclose(relative + absolute, trained.forecaster.predict(windows)["p50"], rtol=1e-4, atol=1e-3)
    assert np.abs(absolute).max() > 0.1  # training moved the absolute head off its zero start


def test_features_follow_what_the_building_has_and_travel_with_the_model(tmp_path: Path, frame: pd.DataFrame) -> None:
    """A meter export without occupancy or solar radiation trains; the SavedModel spells its columns."""
    import tensorflow as tf

    from ml.spec import WINDOW_SPEC_SIGNATURE, features_from_input_names
    from ml.windows import make_windows

    bare = frame.assign(occupancy=np.nan, solar_radiation=np.nan, forecast_solar_radiation=np.nan)
    trained = train_model(bare, SPEC, PARAMS.__class__(**{**PARAMS.__dict__, "epochs": 1}),
                          train_end=pd.Timestamp("2024-03-11", tz="UTC"), stride_h=24)
    spec = trained.spec
    assert "occupancy" not in spec.history_features and "solar_radiation" not in spec.history_features
    assert "forecast_solar_radiation" not in spec.future_features and "forecast_temperature" in spec.future_features
    # Ten weeks of data: the day of the year is left out too (a model that saw no whole year cannot use it).
    assert spec.extra["dropped_features"] == ["doy_cos", "doy_sin", "forecast_solar_radiation", "occupancy", "solar_radiation"]
    path = export_saved_model(trained.forecaster, tmp_path / "1")
    loaded = tf.saved_model.load(str(path))
    names = list(loaded.signatures[WINDOW_SPEC_SIGNATURE].structured_input_signature[1])
    assert features_from_input_names(names) == (spec.history_features, spec.future_features)
    windows = make_windows(bare, spec, start=pd.Timestamp("2024-03-11", tz="UTC"))
    served = loaded.signatures["serving_default"](history=tf.constant(windows.history[:2]), future=tf.constant(windows.future[:2]))
    np.testing.assert_allclose(served["p50"].numpy(), trained.forecaster.predict(windows.take(slice(0, 2)))["p50"], rtol=1e-4, atol=1e-4)


def test_quantile_scales_fit_the_band_to_held_out_errors() -> None:
    from ml.model import quantile_scales

    rng = np.random.default_rng(0)
    actual = rng.normal(0.0, 1.0, 200_000)
    zero = np.zeros_like(actual)
    lower, upper = quantile_scales(actual, zero - 0.5, zero, zero + 2.0, np.ones_like(actual, bool))
    # N(0, 1): 10% lie below -1.2816 and 10% above +1.2816.
    assert lower == pytest.approx(1.2816 / 0.5, rel=0.02) and upper == pytest.approx(1.2816 / 2.0, rel=0.02)
    assert quantile_scales(actual[:10], zero[:10] - 1, zero[:10], zero[:10] + 1, np.ones(10, bool)) == (1.0, 1.0)


def test_served_band_is_calibrated_on_validation_windows(frame: pd.DataFrame, trained) -> None:
    """The factors make the served p10-p90 band hold 80% of the held-out validation hours."""
    from ml.model import QuantileCalibration
    from ml.pipeline import training_windows
    from ml.windows import blocked_split

    layer = next(l for l in trained.forecaster.serving_model.layers if isinstance(l, QuantileCalibration))
    assert float(layer.lower.numpy()) != 1.0 and float(layer.upper.numpy()) != 1.0
    windows = training_windows(frame, trained.spec, None, trained.train_end, 6)
    _, validation = blocked_split(windows, 0.15)
    assert len(validation) == trained.n_validation_windows
    out = trained.forecaster.predict(validation)
    valid = validation.valid
    below = (validation.target < out["p10"])[valid].mean()
    above = (validation.target > out["p90"])[valid].mean()
    assert below == pytest.approx(0.1, abs=0.02) and above == pytest.approx(0.1, abs=0.02)


def test_serving_export_writes_no_variable_and_serves_the_same_outputs(tmp_path: Path, frame: pd.DataFrame, monkeypatch) -> None:
    """Keras builds the LSTM's dropout mask even at inference: traced as is, every serving call drew random
    numbers and wrote the seed generator's variable. The export traces without it; every signature of the
    export, plain and XLA-compiled, gives exactly what the export with the write gives."""
    import contextlib

    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    import ml.model
    from ml.model import build_forecaster
    from ml.windows import make_windows
    from serving.xla import write_xla_saved_model

    spec = WindowSpec(lookback_h=48, horizon_h=24)
    windows = make_windows(frame.iloc[: 24 * 21], spec)
    forecaster = build_forecaster(spec, ModelParams(units=8, layers=2, dropout=0.2), windows)
    lstms = [layer for layer in forecaster.serving_model.layers if isinstance(layer, ml.model.keras.layers.LSTM)]
    dropouts = [layer.cell.dropout for layer in lstms]
    assert dropouts == [0.2, 0.2, 0.0]  # two encoder layers with dropout, the decoder without

    def variable_writes(path: Path) -> int:
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        return sum(node.op.startswith("Assign") and "Variable" in node.op
                   for function in proto.meta_graphs[0].graph_def.library.function
                   if not function.signature.name.startswith("__inference__traced_")  # the checkpoint save/restore
                   for node in function.node_def)

    new = export_saved_model(forecaster, tmp_path / "new" / "1")
    with monkeypatch.context() as patch:
        patch.setattr(ml.model, "_inference_only", lambda model: contextlib.nullcontext())
        old = export_saved_model(forecaster, tmp_path / "old" / "1")
    assert variable_writes(old) == 2 and variable_writes(new) == 0  # one per encoder layer with dropout before
    # Dropout rates are back after the export.
    assert [layer.cell.dropout for layer in lstms] == dropouts
    exports = {"new": new, "old": old, "new_xla": write_xla_saved_model(new, tmp_path / "new_xla" / "1"),
               "old_xla": write_xla_saved_model(old, tmp_path / "old_xla" / "1")}
    assert variable_writes(exports["new_xla"]) == 0
    sample = windows.take(slice(0, 3))
    history, future = tf.constant(sample.history), tf.constant(sample.future)
    keras_out = forecaster.serving_model({INPUT_HISTORY: history, INPUT_FUTURE: future}, training=False)
    served = {name: tf.saved_model.load(str(path)).signatures for name, path in exports.items()}
    for signature in ("serving_default", "serve"):
        # Both signatures wrap the one traced `serve` function: the old XLA export (a compile per signature, the
        # slow part of this test) is compared on serving_default only.
        outs = {name: signatures[signature](history=history, future=future) for name, signatures in served.items()
                if name != "old_xla" or signature == "serving_default"}
        for quantile in ("p10", "p50", "p90"):
            np.testing.assert_array_equal(outs["new"][quantile].numpy(), outs["old"][quantile].numpy())
            if "old_xla" in outs:
                np.testing.assert_array_equal(outs["new_xla"][quantile].numpy(), outs["old_xla"][quantile].numpy())
            # Graph and eager Keras round differently (~2e-6 relative here); XLA fuses and reorders more.
            np.testing.assert_allclose(outs["new"][quantile].numpy(), keras_out[quantile].numpy(), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(outs["new_xla"][quantile].numpy(), outs["new"][quantile].numpy(), rtol=1e-4, atol=2e-3)
