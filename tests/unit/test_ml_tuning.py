"""Tuning: a study over another search space is refused with a message, not an Optuna internals error."""

from __future__ import annotations

import optuna
import pytest

from ml.tuning import BATCH_SIZES, UNITS, check_search_space
from wattflow.settings import Settings


def _study_with(batch_sizes: list[int], settings: Settings) -> optuna.Study:
    study = optuna.create_study(study_name="s", direction="minimize")
    distributions = {
        "units": optuna.distributions.CategoricalDistribution(list(UNITS)),
        "batch_size": optuna.distributions.CategoricalDistribution(batch_sizes),
        "lookback_h": optuna.distributions.CategoricalDistribution(list(settings.model.tuning_lookbacks)),
    }
    params = {"units": UNITS[0], "batch_size": batch_sizes[0], "lookback_h": settings.model.tuning_lookbacks[0]}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=0.5))
    return study


def test_a_study_over_the_current_space_resumes() -> None:
    settings = Settings()
    check_search_space(_study_with(list(BATCH_SIZES), settings), settings)


def test_a_study_over_other_batch_sizes_is_refused_by_name() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match=r"study 's' searched batch_size over \[32, 64, 128\]"):
        check_search_space(_study_with([32, 64, 128], settings), settings)


@pytest.mark.parametrize(("train_stride", "configured", "expected"), [(6, None, 12), (2, None, 4), (12, None, 24), (24, None, 24), (8, None, 8), (6, 3, 3)])
def test_trials_take_origins_twice_as_far_apart_unless_configured(train_stride: int, configured: int | None, expected: int) -> None:
    from ml.tuning import tuning_stride_h

    settings = Settings()
    settings.model.train_origin_stride_h = train_stride
    settings.model.tuning_origin_stride_h = configured
    assert tuning_stride_h(settings) == expected
