"""A small Keras 3 forecaster with the serving contract of `ml.spec` (inputs `history`/`future`, outputs p10/p50/p90).

Used by the serving tests and the serving benchmark so they do not depend on the training code; the real
model comes from the ML package through the registry. Imports Keras only inside functions.
"""

from __future__ import annotations

from pathlib import Path

from ml.spec import INPUT_FUTURE, INPUT_HISTORY, WindowSpec


def build_contract_model(spec: WindowSpec, *, units: int = 64, seed: int = 0, bias: float = 0.0):
    """An LSTM encoder over the history, concatenated with the flattened future features, one dense head per quantile.

    `bias` shifts every output: tests tell two exported versions apart by it.
    """
    import keras

    keras.utils.set_random_seed(seed)
    history = keras.Input(shape=(spec.lookback_h, len(spec.history_features)), name=INPUT_HISTORY, dtype="float32")
    future = keras.Input(shape=(spec.horizon_h, len(spec.future_features)), name=INPUT_FUTURE, dtype="float32")
    encoded = keras.layers.LSTM(units)(history)
    joined = keras.layers.Concatenate()([encoded, keras.layers.Flatten()(future)])
    hidden = keras.layers.Dense(units, activation="relu")(joined)
    outputs = {}
    for name in spec.output_names:
        head = keras.layers.Dense(spec.horizon_h, name=f"head_{name}", bias_initializer=keras.initializers.Constant(bias))
        outputs[name] = head(hidden)
    return keras.Model(inputs={INPUT_HISTORY: history, INPUT_FUTURE: future}, outputs=outputs)


def export_contract_model(path: Path, spec: WindowSpec, *, units: int = 64, seed: int = 0, bias: float = 0.0,
                          jit_compile: bool = False) -> Path:
    """Export as a SavedModel whose `serving_default` signature follows the contract (XLA-compiled if asked)."""
    model = build_contract_model(spec, units=units, seed=seed, bias=bias)
    if not jit_compile:
        model.export(str(path), format="tf_saved_model", verbose=False)
        return Path(path)
    import tempfile

    from serving.xla import write_xla_saved_model

    with tempfile.TemporaryDirectory() as plain:
        model.export(plain, format="tf_saved_model", verbose=False)
        return write_xla_saved_model(Path(plain), Path(path))
