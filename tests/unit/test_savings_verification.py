"""Savings verification (IPMVP Option C) on simulated retrofits whose true savings the simulator records
(tests/savings_world.py: three buildings of different use with HVAC cut by 20-40%, one unchanged).
Baseline: the six weeks before the cut; reporting: the three weeks after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.savings_world import CUT, CUTS, END, START, UNCHANGED, savings_world, true_savings
from monitoring.savings_baselines import fit_lstm_baseline, fit_towt_baseline
from monitoring.verification import (
    BaselineFit,
    FitStatistics,
    Period,
    VerificationError,
    fit_statistics,
    fractional_savings_uncertainty,
    savings_uncertainty_kwh,
    verify,
)

BASELINE, REPORTING = Period.of(START, CUT), Period.of(CUT, END)


@pytest.fixture(scope="module")
def world():
    from wattflow.settings import Settings

    portfolio, features = savings_world()
    return portfolio, features, Settings()


def run(world, building_id: str, model: str, reporting: Period = REPORTING, frame: pd.DataFrame | None = None):
    portfolio, features, settings = world
    building = portfolio.registry.get(building_id)
    frame = features[features["building_id"] == building_id] if frame is None else frame
    if model == "towt":
        fit = fit_towt_baseline(frame, BASELINE, reporting, building.timezone)
    else:
        from ml.model import ModelParams
        from ml.pipeline import spec_from_settings

        s = settings.savings
        params = ModelParams.from_settings(settings.model, units=s.lstm_units, epochs=s.lstm_epochs,
                                           batch_size=s.lstm_batch_size, patience=s.lstm_patience)
        fit = fit_lstm_baseline(frame, BASELINE, reporting, building.timezone, spec=spec_from_settings(settings),
                                params=params, building_id=building_id)
    return verify(building_id, frame, BASELINE, reporting, fit, tariff_per_kwh=building.tariff_per_kwh,
                  currency=building.currency, grid_factor_kg_per_kwh=building.grid_emission_factor_kg_per_kwh,
                  max_cv_rmse=0.30, max_abs_nmbe=0.10, max_fsu=0.50, confidence=0.68)


@pytest.mark.parametrize("building_id", sorted(CUTS))
def test_towt_verified_savings_hold_the_true_savings_within_their_90pct_uncertainty(world, building_id):
    result = run(world, building_id, "towt")
    truth = true_savings(world[0], building_id, CUT, END)
    assert truth > 0
    assert abs(result.savings_kwh - truth) <= result.uncertainty_90_kwh, (result.savings_kwh, truth, result.uncertainty_90_kwh)
    assert result.fit_acceptable and result.fit.cv_rmse < 0.30 and abs(result.fit.nmbe) < 1e-6  # OLS: no bias in-sample
    assert result.fsu_68 < result.fsu_90
    building = world[0].registry.get(building_id)
    assert result.cost == pytest.approx(result.savings_kwh * building.tariff_per_kwh)
    assert result.kgco2e == pytest.approx(result.savings_kwh * building.grid_emission_factor_kg_per_kwh)
    assert result.baseline.n_hours == BASELINE.hours and result.reporting.n_hours == REPORTING.hours


def test_towt_finds_no_savings_in_a_building_that_did_not_change(world):
    result = run(world, UNCHANGED, "towt")
    assert abs(result.savings_kwh) <= result.uncertainty_90_kwh
    assert abs(result.savings_pct) < 5
    # not distinguishable from zero: Guideline 14's FSU < 50% at 68% does not hold, and it says so
    assert not result.sufficient and any("too short" in n for n in result.notes)


@pytest.mark.slow
@pytest.mark.parametrize("building_id", [*sorted(CUTS), UNCHANGED])
def test_lstm_verified_savings_hold_the_true_savings_within_their_90pct_uncertainty(world, building_id):
    result = run(world, building_id, "lstm")
    truth = true_savings(world[0], building_id, CUT, END)
    assert abs(result.savings_kwh - truth) <= result.uncertainty_90_kwh, (result.savings_kwh, truth, result.uncertainty_90_kwh)
    assert result.fit.cv_rmse < 0.30


def test_non_routine_hours_are_left_out_of_both_periods_alike_and_counted(world):
    portfolio, features, _ = world
    frame = features[features["building_id"] == "b04"].copy()
    ts = pd.to_datetime(frame["ts"], utc=True)
    flagged = ((ts >= "2024-01-20") & (ts < "2024-01-21 06:00")) | ((ts >= "2024-02-20") & (ts < "2024-02-21"))
    frame.loc[flagged.to_numpy(), "energy_valid"] = False
    frame.loc[flagged.to_numpy(), "energy_kwh"] = 99_999.0  # a spike validation caught: must not count
    frame = frame[~((ts >= "2024-02-25 00:00") & (ts < "2024-02-25 03:00")).to_numpy()]  # 3 h never arrived
    clean = run(world, "b04", "towt")
    result = run(world, "b04", "towt", frame=frame)
    assert (result.baseline.excluded_hours, result.reporting.excluded_hours) == (30, 27)
    assert result.baseline.n_hours == BASELINE.hours - 30 and result.reporting.n_hours == REPORTING.hours - 27
    kept = result.hourly["ts"]
    assert not kept.isin(pd.date_range("2024-02-20", "2024-02-21", freq="h", tz="UTC", inclusive="left")).any()
    # the flagged spike counts nowhere: metered use is the clean hours' use on exactly the hours kept
    assert result.metered_kwh == pytest.approx(clean.hourly.loc[clean.hourly["ts"].isin(kept), "metered_kwh"].sum())
    assert any("non-routine hours" in n and "30 baseline h, 27 reporting h" in n for n in result.notes)
    assert result.to_json()["reporting"]["excluded_hours"] == 27


def test_a_reporting_period_too_short_for_the_confidence_says_so(world):
    short = Period.of(CUT, "2024-02-13")
    result = run(world, "b03", "towt", reporting=short)
    assert result.reporting.n_hours == 24 and not result.sufficient
    (note,) = [n for n in result.notes if "too short" in n]
    needed = int(note.split("about ")[1].split(" h")[0])
    assert needed > 24
    assert needed == int(np.ceil(24 * (result.fsu_68 / 0.5) ** 2))


def test_fsu_follows_guideline_14_with_the_autocorrelation_adjustment():
    fit = FitStatistics(n_hours=1000, n_parameters=10, cv_rmse=0.2, nmbe=0.0, autocorrelation=0.6, n_effective=250.0, mean_kwh=10.0)
    from scipy import stats

    t = stats.t.ppf(0.95, 990)
    expected = 1.26 * t * 0.2 * np.sqrt((1000 / 250) * (1 + 2 / 250) / 500) / 0.1
    assert fractional_savings_uncertainty(fit, 500, 0.1, 0.90) == pytest.approx(expected)
    # four times the reporting hours halve it; no savings, no fraction
    assert fractional_savings_uncertainty(fit, 2000, 0.1, 0.90) == pytest.approx(expected / 2)
    assert fractional_savings_uncertainty(fit, 500, 0.0, 0.90) is None
    # in kWh: FSU times the savings (10% of a 1,000 kWh adjusted baseline), defined at zero savings too
    assert savings_uncertainty_kwh(fit, 500, 1000.0, 0.90) == pytest.approx(expected * 100)
    # an out-of-sample bias (the LSTM's held-out NMBE) joins in quadrature and does not shrink with m
    biased = FitStatistics(**{**fit.__dict__, "nmbe": -0.05})
    assert savings_uncertainty_kwh(biased, 500, 1000.0, 0.90, systematic=True) == pytest.approx(np.hypot(expected * 100, 50))
    assert savings_uncertainty_kwh(biased, 10**9, 1000.0, 0.90, systematic=True) == pytest.approx(50, rel=1e-3)


def test_fit_statistics_use_n_minus_p_and_the_effective_sample_size():
    ts = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")
    y = np.array([10.0, 12, 11, 13, 12, 14])
    yhat = np.array([11.0, 11, 11, 12, 12, 13])
    s = fit_statistics(ts, y, yhat, 2)
    residual = y - yhat
    assert s.cv_rmse == pytest.approx(np.sqrt((residual**2).sum() / 4) / y.mean())
    assert s.nmbe == pytest.approx(residual.sum() / (4 * y.mean()))
    assert s.n_effective == pytest.approx(6 * (1 - s.autocorrelation) / (1 + s.autocorrelation))
    with pytest.raises(VerificationError, match="lengthen the baseline"):
        fit_statistics(ts, y, yhat, 6)


def test_periods_must_be_readable_and_ordered():
    with pytest.raises(VerificationError, match="--baseline: end 2024-01-01 must be after start 2024-02-01"):
        Period.of("2024-02-01", "2024-01-01", name="--baseline")
    with pytest.raises(VerificationError, match="cannot read 'soon'"):
        Period.of("soon", "2024-01-01", name="--reporting")


def test_a_baseline_fit_without_any_usable_hour_is_refused(world):
    _, features, _ = world
    frame = features[features["building_id"] == "b01"].assign(energy_valid=False)
    fit = BaselineFit("towt", 1, pd.Series(dtype=float), pd.Series(dtype=float))
    with pytest.raises(VerificationError, match="no usable hour for building 'b01'"):
        verify("b01", frame, BASELINE, REPORTING, fit, tariff_per_kwh=0.3, currency="EUR", grid_factor_kg_per_kwh=0.4,
               max_cv_rmse=0.3, max_abs_nmbe=0.1, max_fsu=0.5, confidence=0.68)


def test_towt_reproduces_opendsm_caltrack_hourly_on_the_same_data():
    """OpenDSM 1.2.7's own CalTRACK hourly model (tests/fixtures/opendsm/make_reference.py; not a
    dependency) on a year of simulated baseline: ours predicts the same daily kWh, single segment and
    CalTRACK's weighted monthly segments alike."""
    from monitoring.towt import fit_towt
    from tests.fixtures.opendsm.world import CUT as REF_CUT, reference_world

    reference = json.loads((Path(__file__).parents[1] / "fixtures" / "opendsm" / "towt_reference.json").read_text())
    registry, features = reference_world()
    cut = pd.Timestamp(REF_CUT, tz="UTC")
    for case, expected in reference["cases"].items():
        building_id, segmentation = case.split("/")
        frame = features[features["building_id"] == building_id]
        ts = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True))
        base, rep = np.asarray(ts < cut), np.asarray(ts >= cut)
        energy, temperature = frame["energy_kwh"].to_numpy(), frame["temperature"].to_numpy()
        observed = pd.Series(energy[rep], index=ts[rep])
        assert observed.groupby(observed.index.floor("D")).sum().round(4).tolist() == pytest.approx(expected["observed_kwh"])
        model = fit_towt(ts[base], energy[base], temperature[base], timezone=registry.get(building_id).timezone,
                         segment_type=segmentation)
        assert model.segment_type == segmentation and len(model.segments) == (1 if segmentation == "single" else 12)
        ours = pd.Series(model.predict(ts[rep], temperature[rep]), index=ts[rep])
        daily = ours.groupby(ours.index.floor("D")).sum()
        assert daily.index.strftime("%Y-%m-%d").tolist() == expected["days"]
        np.testing.assert_allclose(daily.to_numpy(), expected["predicted_kwh"], rtol=2e-3)
        assert daily.sum() == pytest.approx(sum(expected["predicted_kwh"]), rel=1e-4)
