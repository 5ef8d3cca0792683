"""Table contracts, declared once. Both engines and every stage read them from here.

A contract is a pyarrow schema plus the key that makes every write an idempotent upsert and the
partition columns. Timestamps are UTC, microseconds (Delta's `timestamp` type).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableContract:
    layer: str
    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    # Columns that never take part in "did this row change?": bookkeeping that differs on a re-run.
    volatile: tuple[str, ...] = field(default=("ingested_at", "batch_id"))

    @property
    def path(self) -> str:
        """Relative location under the lakehouse root: ``<layer>/<table>``."""
        return f"{self.layer}/{self.name}"

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(
            c for c in self.schema.names if c not in self.keys and c not in self.volatile and c not in self.partition_by
        )


SENSOR_READINGS = TableContract(
    layer="bronze",
    name="sensor_readings",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("sensor_id", pa.string()),
            ("metric", pa.string()),
            ("ts", UTC_TS),
            ("value", pa.float64()),
            ("unit", pa.string()),
            ("source", pa.string()),
            ("batch_id", pa.string()),
            ("ingested_at", UTC_TS),
            ("date", pa.date32()),
        ]
    ),
    keys=("building_id", "sensor_id", "metric", "ts"),
    partition_by=("date",),
    description="Raw sensor readings as received, one row per sensor, metric and timestamp.",
)

WEATHER = TableContract(
    layer="bronze",
    name="weather",
    schema=pa.schema(
        [
            ("site_id", pa.string()),
            ("kind", pa.string()),  # observation | forecast
            ("issued_at", UTC_TS),  # observations: equal to ts
            ("ts", UTC_TS),
            ("temperature_c", pa.float64()),
            ("relative_humidity_pct", pa.float64()),
            ("dew_point_c", pa.float64()),
            ("wind_speed_ms", pa.float64()),
            ("cloud_cover_pct", pa.float64()),
            ("solar_radiation_wm2", pa.float64()),
            ("source", pa.string()),
            ("batch_id", pa.string()),
            ("ingested_at", UTC_TS),
            ("date", pa.date32()),
        ]
    ),
    keys=("site_id", "kind", "issued_at", "ts"),
    partition_by=("date",),
    description="Weather observations and forecasts per site; forecasts keep their issue time.",
)

QUARANTINE_READINGS = TableContract(
    layer="quarantine",
    name="sensor_readings",
    schema=pa.schema(
        [
            ("record_id", pa.string()),  # stable hash of the raw record, so a re-run does not double it
            ("source", pa.string()),
            ("raw", pa.string()),  # the record as received (JSON text)
            ("building_id", pa.string()),
            ("sensor_id", pa.string()),
            ("metric", pa.string()),
            ("ts", UTC_TS),
            ("check_name", pa.string()),
            ("reason", pa.string()),
            ("batch_id", pa.string()),
            ("ingested_at", UTC_TS),
        ]
    ),
    keys=("record_id", "check_name"),
    description="Rejected sensor records as received, with the check that rejected them and why.",
)

QUARANTINE_WEATHER = TableContract(
    layer="quarantine",
    name="weather",
    schema=pa.schema(
        [
            ("record_id", pa.string()),
            ("source", pa.string()),
            ("raw", pa.string()),
            ("site_id", pa.string()),
            ("kind", pa.string()),
            ("issued_at", UTC_TS),
            ("ts", UTC_TS),
            ("check_name", pa.string()),
            ("reason", pa.string()),
            ("batch_id", pa.string()),
            ("ingested_at", UTC_TS),
        ]
    ),
    keys=("record_id", "check_name"),
    description="Rejected weather records as received, with the check that rejected them and why.",
)

BUILDINGS = TableContract(
    layer="reference",
    name="buildings",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("name", pa.string()),
            ("site_id", pa.string()),
            ("timezone", pa.string()),
            ("country", pa.string()),
            ("use_type", pa.string()),
            ("floor_area_m2", pa.float64()),
            ("latitude", pa.float64()),
            ("longitude", pa.float64()),
            ("grid_emission_factor_kg_per_kwh", pa.float64()),
            ("tariff_per_kwh", pa.float64()),
            ("currency", pa.string()),
            ("sensors_json", pa.string()),  # [{sensor_id, metric, unit, offset, scale}]
        ]
    ),
    keys=("building_id",),
    volatile=(),
    description="Building and sensor metadata, mirrored from the registry file.",
)

BUILDING_HOURLY = TableContract(
    layer="silver",
    name="building_hourly",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("ts", UTC_TS),  # start of the hour, UTC
            ("energy_kwh", pa.float64()),
            ("indoor_temperature_c", pa.float64()),
            ("indoor_humidity_pct", pa.float64()),
            ("occupancy", pa.float64()),
            ("co2_ppm", pa.float64()),
            ("outdoor_temperature_c", pa.float64()),
            ("outdoor_humidity_pct", pa.float64()),
            ("solar_radiation_wm2", pa.float64()),
            ("wind_speed_ms", pa.float64()),
            # Day-ahead forecast for this hour: the latest issued before the hour's forecast origin
            # (local midnight of its day), so gold never sees a forecast issued after the origin.
            ("forecast_temperature_c", pa.float64()),
            ("forecast_humidity_pct", pa.float64()),
            ("forecast_solar_radiation_wm2", pa.float64()),
            ("forecast_issued_at", UTC_TS),
            ("n_readings", pa.int32()),  # energy readings that passed the checks
            ("expected_readings", pa.int32()),
            ("n_rejected", pa.int32()),  # readings of the hour (any metric) sent to quarantine
            ("imputed", pa.bool_()),
            ("gap", pa.bool_()),
            ("outlier", pa.bool_()),  # an energy reading of the hour failed a value check (every flag: quality_flags)
            ("quality_flags", pa.string()),
            ("date", pa.date32()),
        ]
    ),
    keys=("building_id", "ts"),
    partition_by=("date",),
    volatile=(),
    description="One row per building and UTC hour: energy, indoor and outdoor conditions, quality flags.",
)

FEATURES = TableContract(
    layer="gold",
    name="features",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("ts", UTC_TS),
            ("energy_kwh", pa.float64()),  # the target; null where silver has a gap
            ("energy_valid", pa.bool_()),  # usable as a training target and for metrics
            ("hour_of_day", pa.int8()),  # local time of the building
            ("day_of_week", pa.int8()),  # 0 = Monday, local
            ("month", pa.int8()),
            ("season", pa.int8()),  # 0 winter, 1 spring, 2 summer, 3 autumn (meteorological, by hemisphere)
            ("is_weekend", pa.bool_()),
            ("is_holiday", pa.bool_()),  # public holiday in the building's country
            ("is_working_hour", pa.bool_()),  # working day (not weekend/holiday) within settings.features.working_hours
            ("hour_sin", pa.float64()),
            ("hour_cos", pa.float64()),
            ("dow_sin", pa.float64()),
            ("dow_cos", pa.float64()),
            ("doy_sin", pa.float64()),
            ("doy_cos", pa.float64()),
            ("temperature", pa.float64()),  # observed outdoor temperature, degC
            ("humidity", pa.float64()),  # observed outdoor relative humidity, %
            ("solar_radiation", pa.float64()),  # observed, W/m2
            ("indoor_temperature", pa.float64()),
            ("occupancy", pa.float64()),
            ("heating_degree_hours", pa.float64()),
            ("cooling_degree_hours", pa.float64()),
            ("temp_humidity_interaction", pa.float64()),
            ("occupancy_time_interaction", pa.float64()),
            ("lagged_energy", pa.float64()),  # energy 24 h before
            ("lagged_energy_168h", pa.float64()),  # energy one week before
            ("rolling_avg_energy", pa.float64()),  # mean of the 24 h before this hour (excludes it)
            ("rolling_avg_energy_168h", pa.float64()),
            ("temperature_std", pa.float64()),  # standardized with the catalogue's parameters
            ("humidity_std", pa.float64()),
            ("occupancy_std", pa.float64()),
            # Day-ahead weather forecast for this hour, known at the forecast origin (local midnight of the
            # hour's day): the only weather the model may see for hours it forecasts. Issued before the
            # origin where one exists, else persistence (see forecast_source).
            ("forecast_temperature", pa.float64()),
            ("forecast_humidity", pa.float64()),
            ("forecast_solar_radiation", pa.float64()),
            ("forecast_issued_at", UTC_TS),  # null where forecast_source is not 'issued'
            # 'issued' | 'persistence' (same hour of the previous day, observed) | null (neither exists)
            ("forecast_source", pa.string()),
            ("date", pa.date32()),
        ]
    ),
    keys=("building_id", "ts"),
    partition_by=("date",),
    volatile=(),
    description="Model features per building and hour: calendar, weather, lags, rolling windows, forecasts.",
)

FORECASTS = TableContract(
    layer="gold",
    name="forecasts",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("issued_at", UTC_TS),
            ("ts", UTC_TS),
            ("horizon_h", pa.int32()),
            ("yhat", pa.float64()),
            ("yhat_p10", pa.float64()),
            ("yhat_p50", pa.float64()),
            ("yhat_p90", pa.float64()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("is_fallback", pa.bool_()),
            ("date", pa.date32()),
        ]
    ),
    keys=("building_id", "issued_at", "ts", "model_name"),
    partition_by=("date",),
    volatile=(),
    description="Served forecasts: one row per building, issue time and target hour.",
)

QUALITY_RESULTS = TableContract(
    layer="monitoring",
    name="quality_results",
    schema=pa.schema(
        [
            ("run_id", pa.string()),
            ("suite", pa.string()),
            ("batch", pa.string()),
            ("expectation", pa.string()),
            ("success", pa.bool_()),
            ("observed_value", pa.string()),
            ("threshold", pa.string()),
            ("unexpected_count", pa.int64()),
            ("element_count", pa.int64()),
            ("policy", pa.string()),
            ("validated_at", UTC_TS),
        ]
    ),
    keys=("suite", "batch", "expectation"),
    volatile=("run_id", "validated_at"),
    description="Great Expectations results: one row per suite, batch and expectation.",
)

MONITORING_DECISIONS = TableContract(
    layer="monitoring",
    name="decisions",
    schema=pa.schema(
        [
            ("as_of", UTC_TS),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("decision", pa.string()),  # retrain | hold
            ("reasons", pa.string()),  # JSON list
            ("figures", pa.string()),  # JSON object
            ("report_uri", pa.string()),
            ("decided_at", UTC_TS),
        ]
    ),
    keys=("as_of", "model_name"),
    volatile=("decided_at",),
    description="Each monitoring pass: the decision, its reasons and figures, and where the reports are.",
)

DRIFT_REPORTS = TableContract(
    layer="monitoring",
    name="drift_reports",
    schema=pa.schema(
        [
            ("as_of", UTC_TS),
            ("model_name", pa.string()),
            ("report_kind", pa.string()),  # input_drift | residual_drift | accuracy
            ("model_version", pa.string()),
            ("window_start", UTC_TS),
            ("window_end", UTC_TS),
            ("n_reference", pa.int64()),
            ("n_current", pa.int64()),
            ("drift_share", pa.float64()),  # share of drifted columns (buildings for residuals); null for accuracy
            ("drift_detected", pa.bool_()),
            ("summary", pa.string()),  # JSON: per-column scores or accuracy metrics
            ("html_uri", pa.string()),
            ("json_uri", pa.string()),
            ("mlflow_run_id", pa.string()),
            ("created_at", UTC_TS),
        ]
    ),
    keys=("as_of", "model_name", "report_kind"),
    volatile=("mlflow_run_id", "created_at"),
    description="Evidently drift and accuracy reports: one row per pass and report, with its files and MLflow run.",
)

ANOMALIES = TableContract(
    layer="monitoring",
    name="anomalies",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("kind", pa.string()),  # after_hours_load | weekend_spike | stuck_meter | high_consumption | low_consumption
            ("start", UTC_TS),  # first anomalous hour, inclusive
            ("end", UTC_TS),  # exclusive
            ("hours", pa.int32()),
            ("energy_kwh", pa.float64()),
            ("expected_kwh", pa.float64()),
            ("excess_kwh", pa.float64()),  # measured minus expected; negative for under-consumption
            ("excess_ratio", pa.float64()),
            ("expected_source", pa.string()),  # forecast_p50 | time_of_week_temperature
            ("score", pa.float64()),  # the largest band exceedance (in band widths) or robust z
            ("severity", pa.string()),  # low | medium | high
            ("cost", pa.float64()),
            ("currency", pa.string()),
            ("co2_kg", pa.float64()),
            ("recommendation", pa.string()),
            ("detected_at", UTC_TS),
        ]
    ),
    keys=("building_id", "kind", "start"),
    volatile=("detected_at",),
    description="Consumption anomalies per building and span, with excess energy, cost, kgCO2e and advice.",
)

RETRAIN_OUTCOMES = TableContract(
    layer="monitoring",
    name="retrain_outcomes",
    schema=pa.schema(
        [
            ("model_name", pa.string()),
            ("new_version", pa.string()),
            ("old_version", pa.string()),
            ("drift_start", UTC_TS),
            ("period_start", UTC_TS),
            ("period_end", UTC_TS),
            ("n_hours", pa.int64()),
            ("old_mae", pa.float64()),
            ("new_mae", pa.float64()),
            ("improvement", pa.float64()),  # 1 - new_mae / old_mae
            ("improved", pa.bool_()),
            ("details", pa.string()),  # JSON: per-building MAE of both models
            ("evaluated_at", UTC_TS),
        ]
    ),
    keys=("model_name", "new_version", "old_version", "drift_start"),
    volatile=("evaluated_at",),
    description="After a retrain: did the new champion beat the old one on the drifted period?",
)

SAVINGS = TableContract(
    layer="gold",
    name="savings",
    schema=pa.schema(
        [
            ("building_id", pa.string()),
            ("month", pa.date32()),  # first day of the reporting month (UTC)
            ("model", pa.string()),  # towt | lstm
            ("decision_as_of", UTC_TS),  # the monitoring decision that recorded the level shift
            ("baseline_start", UTC_TS),
            ("baseline_end", UTC_TS),
            ("reporting_start", UTC_TS),  # this month's part of the reporting period
            ("reporting_end", UTC_TS),
            ("n_hours", pa.int64()),
            ("excluded_hours", pa.int64()),  # non-routine hours left out of this month
            ("metered_kwh", pa.float64()),
            ("adjusted_baseline_kwh", pa.float64()),
            ("savings_kwh", pa.float64()),
            ("savings_pct", pa.float64()),
            ("fsu_68_pct", pa.float64()),
            ("fsu_90_pct", pa.float64()),
            ("uncertainty_68_kwh", pa.float64()),
            ("uncertainty_90_kwh", pa.float64()),
            ("cost", pa.float64()),
            ("currency", pa.string()),
            ("kgco2e", pa.float64()),
            ("cv_rmse", pa.float64()),  # baseline fit, ASHRAE Guideline 14
            ("nmbe", pa.float64()),
            ("fit_acceptable", pa.bool_()),
            ("mlflow_run_id", pa.string()),
            ("verified_at", UTC_TS),
        ]
    ),
    keys=("building_id", "month", "model"),
    volatile=("mlflow_run_id", "verified_at"),
    description="Verified savings (IPMVP Option C) per building, reporting month and baseline model, with FSU.",
)

CONTRACTS: dict[str, TableContract] = {
    c.qualified_name: c
    for c in [
        SENSOR_READINGS,
        WEATHER,
        QUARANTINE_READINGS,
        QUARANTINE_WEATHER,
        BUILDINGS,
        BUILDING_HOURLY,
        FEATURES,
        FORECASTS,
        QUALITY_RESULTS,
        MONITORING_DECISIONS,
        DRIFT_REPORTS,
        ANOMALIES,
        RETRAIN_OUTCOMES,
        SAVINGS,
    ]
}


def register(contract: TableContract) -> TableContract:
    """Add a contract declared by a later stage (gold features, drift reports, anomalies)."""
    CONTRACTS[contract.qualified_name] = contract
    return contract


def contract(name: str) -> TableContract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(sorted(CONTRACTS))}") from None
