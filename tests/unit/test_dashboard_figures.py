"""The dashboard's pure figures: weekly comparison, served forecast, accuracy, downsampling, anomaly hours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wattflow.dashboard.figures import (
    anomaly_hours,
    downsample,
    portfolio_totals,
    recent_accuracy,
    served_forecast,
    weekly_comparison,
)
from wattflow.dashboard.pages import span_from_query

END = pd.Timestamp("2024-03-15", tz="UTC")
BUILDINGS = pd.DataFrame({
    "building_id": ["a", "b"], "name": ["Alpha", "Beta"], "tariff_per_kwh": [0.2, 0.3], "currency": ["EUR", "GBP"],
    "grid_emission_factor_kg_per_kwh": [0.4, 0.1],
})


def hours(building: str, start: pd.Timestamp, n: int, kwh: float) -> pd.DataFrame:
    return pd.DataFrame({"building_id": building, "ts": pd.date_range(start, periods=n, freq="h"), "energy_kwh": kwh})


def test_weekly_comparison_splits_rolling_weeks_and_prices_them() -> None:
    frame = pd.concat([
        hours("a", END - pd.Timedelta(days=14), 168, 1.0),  # last week: 168 kWh
        hours("a", END - pd.Timedelta(days=7), 168, 2.0),  # this week: 336 kWh
        hours("a", END, 5, 100.0),  # after the end: ignored
        hours("b", END - pd.Timedelta(days=7), 168, 1.0),
    ])
    weekly = weekly_comparison(frame, BUILDINGS, END).set_index("building_id")
    assert weekly.loc["a", "this_week_kwh"] == 336 and weekly.loc["a", "last_week_kwh"] == 168
    assert weekly.loc["a", "change"] == pytest.approx(1.0)
    assert weekly.loc["a", "this_week_cost"] == pytest.approx(336 * 0.2)
    assert weekly.loc["a", "this_week_co2_kg"] == pytest.approx(336 * 0.4)
    assert weekly.loc["b", "last_week_kwh"] == 0 and np.isnan(weekly.loc["b", "change"])
    totals = portfolio_totals(weekly.reset_index())
    assert totals["this_week_kwh"] == 504 and totals["cost"]["GBP"] == (pytest.approx(168 * 0.3), 0.0)
    assert totals["this_week_co2_kg"] == pytest.approx(336 * 0.4 + 168 * 0.1)


def test_weekly_comparison_lists_a_building_without_readings() -> None:
    weekly = weekly_comparison(hours("a", END - pd.Timedelta(days=1), 24, 1.0), BUILDINGS, END)
    assert list(weekly["building_id"]) == ["a", "b"]
    assert weekly.set_index("building_id").loc["b", "this_week_kwh"] == 0


def test_served_forecast_is_the_latest_issued_before_the_hour_and_prefers_the_model() -> None:
    ts = pd.Timestamp("2024-03-14 10:00", tz="UTC")
    rows = pd.DataFrame({
        "building_id": "a", "ts": ts, "yhat_p10": [1.0, 2.0, 3.0, 4.0], "yhat_p50": [1.0, 2.0, 3.0, 4.0], "yhat_p90": [1.0, 2.0, 3.0, 4.0],
        "issued_at": [ts - pd.Timedelta(hours=20), ts - pd.Timedelta(hours=10), ts - pd.Timedelta(hours=1), ts + pd.Timedelta(hours=1)],
        "is_fallback": [False, False, True, False], "model_name": "m", "model_version": ["1", "2", "0", "3"],
    })
    served = served_forecast(rows)
    assert len(served) == 1
    # the fallback issued later and the forecast issued after the hour both lose to model v2
    assert served.iloc[0]["model_version"] == "2" and served.iloc[0]["yhat_p50"] == 2.0
    only_fallback = served_forecast(rows.iloc[[2]])
    assert bool(only_fallback.iloc[0]["is_fallback"])


def test_recent_accuracy_scores_the_served_p50_over_the_window_only() -> None:
    actual = hours("a", END - pd.Timedelta(days=3), 72, 10.0)
    served = actual.rename(columns={"energy_kwh": "yhat_p50"}).assign(is_fallback=False)
    served.loc[served.index[-24:], "yhat_p50"] = 12.0  # the last day is 2 kWh high
    acc = recent_accuracy(actual, served, END, days=2)
    assert acc.n_hours == 48
    assert acc.mae == pytest.approx(1.0)
    assert acc.cv_rmse == pytest.approx(np.sqrt(24 * 4 / 47) / 10)
    empty = recent_accuracy(actual, served.iloc[0:0], END, days=2)
    assert empty.n_hours == 0 and np.isnan(empty.mae)


def test_downsample_keeps_short_series_and_averages_long_ones() -> None:
    short = hours("a", END, 100, 1.0)
    assert downsample(short, ["energy_kwh"], 1500)[1] == 1
    year = hours("a", END, 366 * 24, 0.0)
    year["energy_kwh"] = np.arange(len(year), dtype=float)
    out, bucket_h = downsample(year, ["energy_kwh"], 1500)
    assert bucket_h == 6 and len(out) <= 1500
    assert out["energy_kwh"].iloc[0] == pytest.approx(np.mean(np.arange(6)))
    long = hours("a", END, 3 * 366 * 24, 1.0)
    assert downsample(long, ["energy_kwh"], 1500)[1] == 24  # more than 6 h: whole days


def test_anomaly_hours_are_the_hours_inside_each_span() -> None:
    actual = hours("a", END, 24, 1.0)
    spans = pd.DataFrame({"kind": ["after_hours_load"], "start": [END + pd.Timedelta(hours=2)], "end": [END + pd.Timedelta(hours=5)]})
    marked = anomaly_hours(spans, actual)
    assert list(marked["ts"]) == list(pd.date_range(END + pd.Timedelta(hours=2), periods=3, freq="h"))
    assert set(marked["kind"]) == {"after_hours_load"}
    assert anomaly_hours(spans.iloc[0:0], actual).empty


@pytest.mark.parametrize(("search", "days"), [("", 14), ("?days=90", 90), ("?days=x", 14), ("?days=0", 1), ("?days=99999", 3660)])
def test_span_from_query(search: str, days: int) -> None:
    assert span_from_query(search, 14) == days


def test_sql_terms_quote_names_and_values() -> None:
    from datetime import date

    from wattflow.dashboard.reader import _sql_term

    assert _sql_term("building_id", "in", ["a", "o'b"]) == "\"building_id\" IN ('a', 'o''b')"
    assert _sql_term("date", ">=", date(2024, 1, 2)) == "\"date\" >= DATE '2024-01-02'"
    assert _sql_term("building_id", "==", "b01") == "\"building_id\" = 'b01'"
    assert _sql_term("building_id", "in", []) == "FALSE"
    with pytest.raises(ValueError, match="'like'"):
        _sql_term("name", "like", "x%")


class _Engine:
    """Just enough of a TableEngine to count the Delta log reads behind the cache."""

    def __init__(self) -> None:
        self.versions = {"silver.building_hourly": 3}
        self.version_calls = 0

    def version(self, contract) -> int | None:
        self.version_calls += 1
        return self.versions.get(contract.qualified_name)


def test_reader_recomputes_only_when_the_table_version_moves() -> None:
    from lakehouse.schemas import BUILDING_HOURLY
    from wattflow.dashboard.reader import TableReader

    engine = _Engine()
    reader = TableReader(engine, version_ttl_s=0.0)  # ask the log every time
    computed: list[int | None] = []

    def compute(version: int | None) -> str:
        computed.append(version)
        return f"v{version}"

    assert reader.cached(BUILDING_HOURLY, "k", compute) == "v3"
    assert reader.cached(BUILDING_HOURLY, "k", compute) == "v3"
    assert computed == [3] and reader.loads == 1
    engine.versions["silver.building_hourly"] = 4
    assert reader.cached(BUILDING_HOURLY, "k", compute) == "v4"
    assert reader.cached(BUILDING_HOURLY, "other", compute) == "v4"
    assert computed == [3, 4, 4]
    # within the TTL the log is not read again
    trusting = TableReader(engine, version_ttl_s=60.0)
    before = engine.version_calls
    for _ in range(5):
        trusting.version(BUILDING_HOURLY)
    assert engine.version_calls == before + 1
