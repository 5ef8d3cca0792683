"""The expectation suites, in code and versioned with it: one per table.

A suite is plain data (`SuiteSpec`) built from settings, so it imports no GE until a checkpoint runs it.
Each expectation carries its wattflow name (the policy key and quarantine check name) and the threshold
in words, which land in `monitoring.quality_results` next to GE's observed value.

What each suite validates:
- bronze sensor readings: a per-sensor-and-day summary of the vectorised reading checks (flag counts,
  completeness) - GE checks aggregates, numpy did the per-row work;
- bronze weather: the weather rows themselves (few enough for GE's row-level expectations);
- silver hourly and gold features: the frames as written, plus derived columns for the checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_quality.checks import CHECK_NAMES, READING_CHECKS

METRICS = ("energy", "energy_cumulative", "indoor_temperature", "indoor_humidity", "occupancy", "co2")


@dataclass(frozen=True)
class ExpectationSpec:
    name: str
    type: str  # GE expectation class name in `great_expectations.expectations`
    kwargs: dict[str, Any]
    threshold: str
    description: str = ""

    def build(self):
        import great_expectations as gx

        cls = getattr(gx.expectations, self.type)
        return cls(**self.kwargs, meta={"name": self.name, "threshold": self.threshold}, description=self.description or None)


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    asset: str
    expectations: tuple[ExpectationSpec, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [e.name for e in self.expectations]


def bronze_sensor_suite(quality) -> SuiteSpec:
    """Validates `reading_summary(...)`: one row per building, sensor and UTC day."""
    exps = [
        ExpectationSpec("metric_known", "ExpectColumnValuesToBeInSet", {"column": "metric", "value_set": list(METRICS)},
                        f"in {list(METRICS)}", "metric is in the platform's vocabulary"),
        ExpectationSpec("sensor_day_unique", "ExpectCompoundColumnsToBeUnique",
                        {"column_list": ["building_id", "sensor_id", "date"]}, "unique", "one summary row per sensor and day"),
        ExpectationSpec("sensor_completeness", "ExpectColumnValuesToBeBetween",
                        {"column": "completeness", "min_value": quality.min_completeness},
                        f">= {quality.min_completeness}", "share of expected readings received per sensor and day"),
        ExpectationSpec("missing_readings", "ExpectColumnSumToBeBetween", {"column": "n_missing", "min_value": 0, "max_value": 0},
                        "0 readings", "gaps: expected readings (per the sensor's interval) that never arrived"),
    ]
    for check in READING_CHECKS:
        exps.append(
            ExpectationSpec(check.name, "ExpectColumnSumToBeBetween", {"column": f"n_{check.name}", "min_value": 0, "max_value": 0},
                            "0 readings", check.description)
        )
    return SuiteSpec("bronze_sensor_readings", "bronze_sensor_reading_summary", tuple(exps))


def bronze_weather_suite(quality) -> SuiteSpec:
    """Validates the weather rows with derived columns (`weather_check_frame`)."""
    exps = [
        ExpectationSpec("weather_kind_known", "ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": ["observation", "forecast"]},
                        "observation|forecast"),
        ExpectationSpec("weather_keys_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["site_id", "kind", "issued_at", "ts"]},
                        "unique"),
        ExpectationSpec("weather_dew_point_plausible", "ExpectColumnValuesToBeBetween",
                        {"column": "dew_point_excess_c", "max_value": quality.dew_point_tolerance_c},
                        f"dew point - temperature <= {quality.dew_point_tolerance_c}", "dew point never above air temperature"),
        ExpectationSpec("weather_future_observation", "ExpectColumnValuesToBeBetween",
                        {"column": "observation_lead_h", "max_value": quality.max_future_skew_h},
                        f"<= {quality.max_future_skew_h} h after delivery", "observations are not stamped in the future"),
        ExpectationSpec("weather_forecast_after_issue", "ExpectColumnValuesToBeBetween",
                        {"column": "forecast_lead_h", "min_value": 0}, ">= 0 h", "a forecast is for a time after it was issued"),
    ]
    for variable, (lo, hi) in quality.weather_ranges.items():
        exps.append(
            ExpectationSpec(f"weather_range_{variable}", "ExpectColumnValuesToBeBetween",
                            {"column": variable, "min_value": lo, "max_value": hi}, f"[{lo}, {hi}]",
                            f"{variable} is physically plausible")
        )
    return SuiteSpec("bronze_weather", "bronze_weather_rows", tuple(exps))


def silver_hourly_suite(quality) -> SuiteSpec:
    lo, hi = quality.physical_ranges["indoor_temperature"]
    return SuiteSpec(
        "silver_building_hourly",
        "silver_building_hourly",
        (
            ExpectationSpec("hourly_keys_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["building_id", "ts"]}, "unique"),
            ExpectationSpec("hourly_ts_on_the_hour", "ExpectColumnValuesToBeInSet", {"column": "minute_of_ts", "value_set": [0]}, "minute 0"),
            ExpectationSpec("hourly_energy_nonnegative", "ExpectColumnValuesToBeBetween", {"column": "energy_kwh", "min_value": 0}, ">= 0"),
            ExpectationSpec("hourly_readings_within_expected", "ExpectColumnPairValuesAToBeGreaterThanB",
                            {"column_A": "expected_readings", "column_B": "n_readings", "or_equal": True}, "n_readings <= expected"),
            ExpectationSpec("hourly_energy_completeness", "ExpectColumnProportionOfNonNullValuesToBeBetween",
                            {"column": "energy_kwh", "min_value": quality.min_completeness}, f">= {quality.min_completeness}"),
            ExpectationSpec("hourly_outdoor_weather_coverage", "ExpectColumnProportionOfNonNullValuesToBeBetween",
                            {"column": "outdoor_temperature_c", "min_value": quality.min_completeness}, f">= {quality.min_completeness}"),
            ExpectationSpec("hourly_indoor_temperature_range", "ExpectColumnValuesToBeBetween",
                            {"column": "indoor_temperature_c", "min_value": lo, "max_value": hi}, f"[{lo}, {hi}]"),
            ExpectationSpec("forecast_issued_before_origin", "ExpectColumnPairValuesAToBeGreaterThanB",
                            {"column_A": "forecast_origin", "column_B": "forecast_issued_at", "or_equal": False,
                             "ignore_row_if": "either_value_is_missing"}, "issued_at < origin"),
        ),
    )


def gold_features_suite(quality) -> SuiteSpec:
    return SuiteSpec(
        "gold_features",
        "gold_features",
        (
            ExpectationSpec("features_keys_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["building_id", "ts"]}, "unique"),
            ExpectationSpec("features_hour_of_day", "ExpectColumnValuesToBeBetween", {"column": "hour_of_day", "min_value": 0, "max_value": 23}, "[0, 23]"),
            ExpectationSpec("features_day_of_week", "ExpectColumnValuesToBeBetween", {"column": "day_of_week", "min_value": 0, "max_value": 6}, "[0, 6]"),
            ExpectationSpec("features_season", "ExpectColumnValuesToBeInSet", {"column": "season", "value_set": [0, 1, 2, 3]}, "{0,1,2,3}"),
            ExpectationSpec("features_degree_hours_nonnegative", "ExpectColumnValuesToBeBetween",
                            {"column": "heating_degree_hours", "min_value": 0}, ">= 0"),
            ExpectationSpec("features_valid_target_has_energy", "ExpectColumnValuesToNotBeNull",
                            {"column": "energy_kwh", "row_condition": "energy_valid == True", "condition_parser": "pandas"},
                            "energy present where energy_valid"),
            ExpectationSpec("features_lag_coverage", "ExpectColumnProportionOfNonNullValuesToBeBetween",
                            {"column": "lagged_energy", "min_value": 0.5}, ">= 0.5"),
            ExpectationSpec("forecast_issued_before_origin", "ExpectColumnPairValuesAToBeGreaterThanB",
                            {"column_A": "forecast_origin", "column_B": "forecast_issued_at", "or_equal": False,
                             "ignore_row_if": "either_value_is_missing"}, "issued_at < origin"),
        ),
    )


def suite_catalogue(quality) -> dict[str, SuiteSpec]:
    return {s.name: s for s in (bronze_sensor_suite(quality), bronze_weather_suite(quality),
                                silver_hourly_suite(quality), gold_features_suite(quality))}


assert len(CHECK_NAMES) == len(set(CHECK_NAMES))
