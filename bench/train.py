"""Training benchmark: seconds per epoch and per building-year of the default LSTM, 20 Optuna trials, peak RSS.

One simulated building-year of gold features (ml.synthetic: the building simulator's Berlin office b01
curated to gold: schedules, holidays, weather-driven HVAC, day-ahead weather forecasts). Training uses the settings' defaults (lookback 168 h, 64 units, origins every
`train_origin_stride_h` hours, early stopping); tuning runs `--trials` trials of the study with epochs
capped at `--tuning-max-epochs` and median pruning, MLflow child runs included. Targets on 2 cores: a
building-year ≤ 120 s, 20 trials ≤ 900 s.

    python bench/train.py [--days 365] [--trials 20] [--tuning-max-epochs 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGETS = {"building_year_train_s": 120.0, "tuning_20_trials_s": 900.0}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tuning-max-epochs", type=int, default=8)
    parser.add_argument("--skip-tuning", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()

    home = Path(tempfile.mkdtemp(prefix="wattflow-bench-train-"))
    os.environ["WATTFLOW_HOME"] = str(home)
    os.environ["WATTFLOW_MODEL__TUNING_MAX_EPOCHS"] = str(args.tuning_max_epochs)
    from wattflow.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    t = time.perf_counter()
    import keras

    from ml.model import ModelParams
    from ml.pipeline import spec_from_settings, train_model
    from ml.synthetic import synthetic_gold_features

    import_s = time.perf_counter() - t
    frame = synthetic_gold_features(days=args.days, seed=11)
    spec = spec_from_settings(settings)
    params = ModelParams.from_settings(settings.model)

    epoch_times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self._t)

    t, cpu = time.perf_counter(), _cpu_s()
    trained = train_model(frame, spec, params, stride_h=settings.model.train_origin_stride_h,
                          validation_fraction=settings.model.validation_fraction, callbacks=[EpochTimer()])
    train_s, train_cpu_s = time.perf_counter() - t, _cpu_s() - cpu
    years = args.days / 365.0

    results: dict[str, float | int | str | None] = {
        "building_year_train_s": round(train_s / years, 2),
        "epoch_s_median": round(statistics.median(epoch_times), 3),
        "epochs_run": trained.epochs_run,
        "train_windows": trained.n_train_windows,
        "train_cpu_s": round(train_cpu_s, 2),
        "tf_import_s": round(import_s, 2),
    }
    if not args.skip_tuning:
        from ml.tuning import tune

        t, cpu = time.perf_counter(), _cpu_s()
        tuned = tune(frame, settings, n_trials=args.trials, spec=spec, base_params=params, study_name="bench")
        results["tuning_20_trials_s"] = round((time.perf_counter() - t) * 20 / args.trials, 2)
        results["tuning_cpu_s"] = round(_cpu_s() - cpu, 2)
        results["tuning_pruned"] = tuned.n_pruned
        results["tuning_best"] = json.dumps(tuned.best)
    else:
        results["tuning_20_trials_s"] = None
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["load_avg_1m_before"] = round(load_before[0], 2)
    results["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()

    print(f"{'metric':<26}{'value':>14}{'target':>10}")
    for key, value in results.items():
        target = TARGETS.get(key)
        print(f"{key:<26}{str(value):>14}{'' if target is None else f'≤ {target:g}':>10}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
