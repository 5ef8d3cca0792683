"""The one settings object. Every path, URL and policy number lives here.

Environment variables use the prefix ``WATTFLOW_`` and ``__`` between nested sections, e.g.
``WATTFLOW_HOME=/srv/wattflow`` or ``WATTFLOW_QUALITY__STUCK_RUN_LENGTH=12``; a ``.env`` file in the
working directory is read too.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LakehouseSettings(BaseModel):
    engine: Literal["delta_rs", "spark"] = "delta_rs"
    # A URI root for tables; empty means $WATTFLOW_HOME/lakehouse. "s3://bucket/prefix" works for both engines.
    root_uri: str = ""
    # delta-rs object-store options (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), passed through as given.
    storage_options: dict[str, str] = Field(default_factory=dict)
    # The master of the process's one Spark session when compute.spark_master (or Airflow's spark_default
    # connection) does not name one: see Settings.spark_master_url.
    spark_master: str = "local[2]"
    spark_app_name: str = "wattflow"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 4
    # Rows per Arrow batch between Python and the JVM (createDataFrame / toArrow).
    spark_arrow_batch_rows: int = 100_000
    # Spark ingest (lakehouse/simulator/landing.py) simulates and MERGEs the portfolio in waves of this
    # many chunks, one chunk per task, so an executor holds one chunk whatever the portfolio's size (one
    # job over every chunk ran a 2g executor out of memory at 200 buildings). 0: the cluster's cores.
    spark_landing_wave_chunks: int = Field(default=0, ge=0)
    spark_ui_enabled: bool = False
    spark_log_level: str = "WARN"
    # Any further Spark properties, passed through as given (e.g. {"spark.executor.memory": "8g"}).
    spark_conf: dict[str, str] = Field(default_factory=dict)
    # The JVM side of delta-spark, built for Spark 4.2 / Scala 2.13. The pip delta-spark is 4.4.1 but
    # Maven Central has no 4.4.1 jars; 4.4.0 is the newest published and speaks the same Python API.
    delta_spark_package: str = "io.delta:delta-spark_4.2_2.13:4.4.0"
    # S3A for s3:// roots; empty means hadoop-aws of exactly the Hadoop version PySpark ships.
    hadoop_aws_package: str = ""
    spark_extra_packages: list[str] = Field(default_factory=list)
    # A MERGE names the batch's partition values literally (so Delta prunes files) up to this many.
    spark_merge_prune_max_partition_values: int = 1000
    # Folder with the resolved Spark jars; empty means $WATTFLOW_HOME/cache/jars. Point several homes
    # (tests, CI) at one shared folder, e.g. ~/.cache/wattflow/jars, to download the jars once.
    spark_jars_dir: str = ""
    vacuum_retention_hours: int = 168
    # Concurrent writers (overlapping DAG runs, MQTT, file drops, backfills) upsert the same tables. Each
    # upsert commits against the version it read; Delta refuses a commit whose read data another writer
    # changed in between, and the upsert then re-reads, re-diffs and tries again, up to this many attempts,
    # sleeping a random share ("full jitter") of a doubling backoff so the losers do not collide again.
    # Sized for the worst case bench/concurrency.py measures: 4 writers upserting the same partitions back
    # to back, where each retry wins with odds of about 1 in 4 (one upsert needed 24 retries in 200);
    # 50 attempts make giving up a ~1e-6 event there, and far rarer under ordinary overlap.
    commit_max_attempts: int = Field(default=50, ge=1)
    commit_backoff_initial_s: float = Field(default=0.02, ge=0.0)
    commit_backoff_max_s: float = Field(default=1.0, ge=0.0)

    @field_validator("storage_options")
    @classmethod
    def _no_unsafe_rename(cls, options: dict[str, str]) -> dict[str, str]:
        # With unsafe renames two writers can both "win" the same log version and one commit is silently
        # lost. delta-rs commits with S3 conditional writes (If-None-Match) instead; see docs/security.md.
        for key, value in options.items():
            if key.upper() == "AWS_S3_ALLOW_UNSAFE_RENAME" and str(value).strip().lower() in {"true", "1", "yes"}:
                raise ValueError(
                    f"lakehouse.storage_options: {key}={value!r} lets two concurrent writers overwrite each other's "
                    "Delta commit. Remove it; for an S3-compatible store that supports conditional writes (MinIO, "
                    "AWS S3) set conditional_put=etag instead (docs/security.md, 'Delta tables and object stores')."
                )
        return options


class ComputeSettings(BaseModel):
    """Where the per-building stages (reading checks and silver, gold features, batch scoring, monitoring) run.

    One rule ties compute to storage: ``runner = "spark"`` implies Spark for the tables too (executors hand
    their frames back to a delta-spark MERGE), whatever ``lakehouse.engine`` says; ``runner = "local"``
    uses ``lakehouse.engine`` as before (delta-rs by default). ``Settings.table_engine`` is that rule.
    """

    # "local": this process, buildings in chunks of chunk_buildings (memory bounded by a chunk, not the
    # portfolio). "spark": groupBy("building_id").applyInPandas on the cluster at spark_master.
    runner: Literal["local", "spark"] = "local"
    # spark://host:7077, k8s://https://..., local[N]. Empty: lakehouse.spark_master (the storage session's
    # master; one JVM per process, so there is only ever one). Under Airflow the `spark_default` connection
    # (AIRFLOW_CONN_SPARK_DEFAULT) wins when set, as Airflow users expect.
    spark_master: str = ""
    # Buildings per chunk on the local runner: peak memory is one chunk's bronze + silver + features.
    # 50 buildings x (margin + a day) of 15-minute readings is well under 1 GB.
    chunk_buildings: int = Field(default=50, ge=1)
    # Python workers per executor core for scoring on Spark load the champion once each; rows per Arrow
    # batch handed to a pandas UDF (bounded worker memory for the biggest building).
    spark_udf_batch_rows: int = Field(default=50_000, ge=1_000)


class SimulatorSettings(BaseModel):
    seed: int = 42
    interval_minutes: int = 15
    weather_forecast_issue_hour_utc: int = 6
    # The simulated "world" that the orchestrated sensor source replays interval by interval: a fixed
    # portfolio over a fixed span, so that re-running any interval lands exactly the same readings.
    world_buildings: int = 3
    world_start: str = "2024-01-01"
    world_end: str = "2024-04-01"
    world_faults: bool = False
    # Drift events as the CLI writes them, e.g. "retrofit:b01:2024-03-01:0.25".
    world_drift: list[str] = Field(default_factory=list)


class QualitySettings(BaseModel):
    # Stuck sensor (`checks.stuck_run_limits`): a run of identical readings is stuck when it is at least
    # stuck_run_length readings and stuck_min_hours long, and the sensor's own rate of repeats makes a run
    # that long expected fewer than stuck_false_alarms times in the batch.
    stuck_run_length: int = 3
    stuck_min_hours: float = 3.0
    stuck_false_alarms: float = 0.01
    spike_mad_threshold: float = 8.0
    max_future_skew_h: float = 24.0
    short_gap_max_h: int = 2
    # expectation name -> "reject" | "warn" | "fail"; anything unnamed uses default_policy.
    # Late, rolled-over and reset readings are true values (kept, flagged); a batch that is mostly
    # rejected is broken upstream, so it stops the pipeline instead of writing a hollow silver.
    policies: dict[str, Literal["reject", "warn", "fail"]] = Field(
        default_factory=lambda: {
            "late_arrival": "warn",
            "cumulative_rollover": "warn",
            "cumulative_reset": "warn",
            "sensor_completeness": "warn",
            "missing_readings": "warn",
            "hourly_energy_completeness": "warn",
            "hourly_outdoor_weather_coverage": "warn",
            "weather_completeness": "warn",
            # Bad readings are quarantined and the rest go on; only a systematic fault (wrong unit, wrong
            # clock) stops a batch: a real meter with a few flat stretches must not block its building.
            "reject_share": "warn",
            "systematic_reject_share": "fail",
            "hourly_keys_unique": "fail",
            "features_keys_unique": "fail",
            "forecast_issued_before_origin": "fail",
        }
    )
    default_policy: Literal["reject", "warn", "fail"] = "reject"
    # Physical range per metric in its canonical unit (kWh per reading, degC, %, people, ppm).
    physical_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "energy": (0.0, 5_000.0),
            "energy_cumulative": (0.0, 1e12),
            "indoor_temperature": (-10.0, 45.0),
            "indoor_humidity": (0.0, 100.0),
            "occupancy": (0.0, 100_000.0),
            "co2": (250.0, 10_000.0),
        }
    )
    weather_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "temperature_c": (-60.0, 60.0),
            "relative_humidity_pct": (0.0, 100.0),
            "dew_point_c": (-80.0, 40.0),
            "wind_speed_ms": (0.0, 75.0),
            "cloud_cover_pct": (0.0, 100.0),
            "solar_radiation_wm2": (0.0, 1_400.0),
        }
    )
    # Dew point above air temperature by more than this is physically impossible (sensor or unit error).
    dew_point_tolerance_c: float = 1.0
    spike_window: int = 7  # readings in the centred Hampel window
    # Floors on the Hampel scale: a share of the local median (smooth load curves have a tiny MAD, and a
    # morning ramp is not a spike) and an absolute floor per metric in its canonical unit.
    spike_relative_floor: float = 0.1
    spike_resolution_steps: float = 2.0  # the Hampel scale is at least this many steps of the sensor's resolution
    spike_absolute_floor: dict[str, float] = Field(
        default_factory=lambda: {"indoor_temperature": 0.5, "indoor_humidity": 1.0, "co2": 20.0, "energy": 0.0}
    )
    spike_metrics: list[str] = Field(default_factory=lambda: ["energy", "energy_cumulative", "indoor_temperature", "indoor_humidity", "co2"])
    stuck_metrics: list[str] = Field(default_factory=lambda: ["energy", "energy_cumulative", "indoor_temperature", "indoor_humidity", "co2"])
    # A reading this many times the sensor's own median is a Wh-for-kWh mix-up (the true factor is 1000).
    unit_mixup_ratio: float = 100.0
    # An indoor temperature this far above the sensor's median, that fits it once read as degF, is degF.
    fahrenheit_min_excess_c: float = 20.0
    fahrenheit_match_c: float = 10.0
    # A register drop from above this share of its capacity (next power of ten) is a rollover, else a reset.
    rollover_fraction: float = 0.9
    dst_window_h: float = 6.0  # hours around a DST switch inspected for missing or doubled slots
    min_completeness: float = 0.9  # share of expected readings per sensor and day (warn below)
    max_reject_share: float = 0.05  # share of a batch's readings rejected before `reject_share` warns
    # Checks whose failures mean the source is wrong as a whole (its unit or its clock), not a reading:
    # above max_systematic_share of one sensor's readings in a batch, the batch stops (`systematic_reject_share`).
    systematic_checks: list[str] = Field(
        default_factory=lambda: ["unit_known", "unit_mixup_wh_kwh", "unit_mixup_fahrenheit", "dst_artifact", "future_timestamp"]
    )
    max_systematic_share: float = 0.25  # of one sensor's readings in the batch (a glitch of hours is not systematic)
    curate_margin_h: int = 24  # read this much before `start` so sequence checks see context


class FeatureSettings(BaseModel):
    heating_base_c: float = 15.5
    cooling_base_c: float = 22.0
    working_hours: tuple[int, int] = (8, 18)  # local hours [start, end) on working days
    rolling_min_share: float = 0.5  # a trailing mean needs at least this share of its window
    margin_h: int = 192  # read before `start`: the 168 h lag and window, plus a day


class MqttSettings(BaseModel):
    broker: str = "127.0.0.1:1883"
    topic: str = "sites/+/buildings/+/sensors/#"
    client_id: str = "wattflow-ingest"
    qos: int = 1
    batch_max_readings: int = 5000
    batch_max_age_s: float = 1.0
    # While a commit is running, the next batch may grow to this many times batch_max_readings (group commit).
    batch_backlog_factor: int = 10
    # Secrets come from the environment (WATTFLOW_MQTT__USERNAME, WATTFLOW_MQTT__PASSWORD), never a file in git.
    username: str = ""
    password: str = ""
    # TLS: on when `tls` is set or any file below is given. AWS IoT Core and similar hubs want the CA that
    # signed the broker's certificate plus the device's own certificate and key (mutual TLS); a broker
    # with a public certificate and passwords needs only `tls = true`. Paths to PEM files.
    tls: bool = False
    tls_ca_file: str = ""  # empty: the system's trusted CAs
    tls_cert_file: str = ""
    tls_key_file: str = ""
    connect_timeout_s: float = 30.0


class RegistrySettings(BaseModel):
    # Placeholders for a building first seen in a meter export (`wattflow ingest file`); the CLI lists
    # which fields were guessed so they get edited in the registry file. Floor area is never guessed: it
    # stays unknown (a guessed area would set a plausible maximum that a real meter breaks).
    new_building_grid_emission_factor_kg_per_kwh: float = 0.0
    new_building_tariff_per_kwh: float = 0.0
    new_building_currency: str = "EUR"


class ScreenSettings(BaseModel):
    """Source-side plausibility checks before bronze (a stream record failing one goes to quarantine)."""

    # Energy per reading above floor area x this is taken as a unit error (Wh sent as kWh is 1000x); only
    # where the registry has the floor area. Without it, silver judges a reading by the meter's own median.
    max_energy_kwh_per_m2: float = 0.5
    indoor_temperature_c: tuple[float, float] = (-30.0, 60.0)
    indoor_humidity_pct: tuple[float, float] = (0.0, 100.0)
    co2_ppm: tuple[float, float] = (0.0, 10_000.0)
    occupancy: tuple[float, float] = (0.0, 100_000.0)


class InfluxSettings(BaseModel):
    url: str = ""
    token: str = ""
    org: str = "wattflow"
    bucket: str = "sensors"
    forecast_bucket: str = "forecasts"
    page_size: int = 50_000  # rows per series per request (Flux limit/offset)
    page_window_h: int = 24  # the [start, stop) window is read in time windows of this length
    timeout_s: float = 60.0
    # How readings are laid out: metric = measurement name ("energy", ...) with the value in one field,
    # or one measurement (`measurement`) with one field per metric.
    metric_from: Literal["measurement", "field"] = "measurement"
    measurement: str = "building_sensors"
    value_field: str = "value"
    building_tag: str = "building_id"
    sensor_tag: str = "sensor_id"
    unit_tag: str = "unit"
    forecast_measurement: str = "energy_forecast"


class WeatherSettings(BaseModel):
    archive_url: str = "https://archive-api.open-meteo.com/v1/archive"
    forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    timeout_s: float = 20.0
    max_retries: int = 4
    backoff_initial_s: float = 1.0  # exponential backoff between retries (5xx, 429, timeouts)
    backoff_max_s: float = 30.0
    # Archive (reanalysis) data younger than this may still be revised: re-fetched, not served from cache.
    archive_final_after_days: int = 7
    archive_max_days_per_request: int = 366
    forecast_days: int = 7
    # Previous Runs API: what the forecast said N days before each hour (`<variable>_previous_dayN`).
    previous_runs_url: str = "https://previous-runs-api.open-meteo.com/v1/forecast"
    previous_runs_max_days_per_request: int = 92
    previous_runs_lead_days: tuple[int, ...] = (1, 2)  # day 2 covers the late hours day 1 cannot (see below)
    # A `_previous_dayN` value comes from a run started at most N*24 h before its hour (the docs: "predicted
    # 24 hours before valid time"); runs are published hours after they start. Its issue time is stamped
    # that much later than the latest possible start, so "issued before the origin" never admits a run
    # that was not yet published at the origin.
    previous_runs_published_after_h: int = 8


class ModelSettings(BaseModel):
    model_name: str = "building_energy_lstm"
    experiment: str = "wattflow-forecasting"
    lookback_h: int = 168
    horizon_h: int = 24
    epochs: int = 30
    batch_size: int = 64
    units: int = 64
    layers: int = 1
    # The encoder LSTM reads the most recent hours of the lookback; the rest reaches the decoder as
    # same-hour lags (the encoder's cost grows with its length, the lags are nearly free).
    encoder_hours: int = 48
    dropout: float = 0.1
    learning_rate: float = 1e-3
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    promotion_margin: float = 0.02
    max_cv_rmse: float = 0.30
    max_abs_nmbe: float = 0.10
    tuning_trials: int = 20
    # Epoch cap per Optuna trial; pruning stops weak trials earlier.
    tuning_max_epochs: int = 10
    tuning_lookbacks: list[int] = Field(default_factory=lambda: [48, 96, 168])
    # Origins of tuning trials every N hours; None: twice train_origin_stride_h (trials only rank configurations).
    tuning_origin_stride_h: int | None = None
    early_stopping_patience: int = 5
    # Training origins every N hours from local midnight (more examples); backtests always use midnight.
    train_origin_stride_h: int = 6
    validation_fraction: float = 0.15
    # ASHRAE Guideline 14 degrees of freedom p in (n - p); 1 as in its hourly calibration criteria.
    ashrae_p: int = 1
    # Days after the training cut used to backtest a new model against the champion and the baselines.
    backtest_days: int = 28
    # Training streams gold a few buildings at a time into per-building window shards on local disk
    # (ml/training_stream.py) and trains each epoch on at most this many windows, sampled afresh and
    # stratified over use types then buildings: memory stays flat as buildings are added. A portfolio with
    # fewer windows trains on all of them every epoch. ~8 KB a window at the default spec: 32768 = ~260 MB.
    train_windows_per_epoch: int = 32768
    # Buildings read from gold at once while building the shards (and while tuning picks its buildings).
    train_shard_buildings: int = 8
    # Optuna tunes on the training period of at most this many buildings, stratified over use types.
    tuning_max_buildings: int = 24
    # Optuna study storage (any SQLAlchemy URL). Empty: SQLite under WATTFLOW_HOME, one process at a time.
    # Several tuning workers share one study through a server database: postgresql+psycopg2://... in production.
    tuning_storage: str = ""


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    poll_wait_s: float = 2.0
    deadline_s: float = 5.0
    # Client: attempts on UNAVAILABLE / DEADLINE_EXCEEDED before falling back to the seasonal-naive forecast.
    retries: int = 3
    retry_backoff_s: float = 0.2
    # Export: warmup requests are built from this many recent gold-feature windows (looked up this many days back).
    warmup_windows: int = 8
    warmup_days: int = 21
    # Largest request body either API accepts.
    max_request_bytes: int = 64 * 1024 * 1024
    # Client TLS towards a server started with --ssl_config_file (PEM file paths; empty: plaintext). The CA checks
    # the server's certificate; a certificate and key are sent when the server verifies clients (mutual TLS).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # The name to check the server's certificate against when it differs from the target's host.
    tls_server_name: str = ""
    # Export: write the serving signature as an XLA-compiled function (`jit_compile=True`). TF Serving then needs
    # --xla_cpu_compilation_enabled=true (compose and Kubernetes pass it when this is on); batches are padded to
    # `xla_batch_sizes` (= allowed_batch_sizes in infra/serving/batching.config) so XLA compiles each shape once,
    # during the warmup requests the export writes for every size.
    xla: bool = False
    xla_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    # Server: an unbatched model call runs in the gRPC event loop (no thread hand-off, 0.12-0.2 ms less at batch 1)
    # when the server was idle as the request came: nothing in flight and the last call ended at least
    # `inline_idle_gap_ms` before (a client's next request takes a gRPC round trip, ~0.5 ms; queued requests start
    # within tens of microseconds). `inline_call_max_ms` caps how long such a call may hold the loop (a request
    # arriving meanwhile waits for it): a call that took longer last time at its batch size uses a thread. -1: never.
    # A call that finds another in flight keeps every call on threads for `inline_busy_hold_ms` (concurrent clients).
    inline_call_max_ms: float = 10.0
    inline_idle_gap_ms: float = 0.2
    inline_busy_hold_ms: float = 100.0


class AnomalySettings(BaseModel):
    # Hours outside the forecast p10-p90 band by more than this many band widths are anomalous. A
    # calibrated band has 10% of hours above p90 by construction; one width beyond it is ~3.8 sigma.
    band_margin: float = 1.0
    # Without a forecast: robust z-score (median/MAD of the same hour of the week) beyond this.
    z_threshold: float = 3.5
    baseline_weeks: int = 4
    # After-hours window in the building's local time; start > end wraps midnight.
    after_hours_start_h: int = 22
    after_hours_end_h: int = 6
    # After-hours load this share above the weekday median of the same hour is waste even inside the band.
    after_hours_ratio: float = 0.2
    weekend_ratio: float = 0.3
    # ...and only where the hour also stands out from the baseline's noise by this many robust z-scores.
    ratio_min_z: float = 2.0
    # ...or, against a forecast, this many band widths above p90.
    ratio_min_band: float = 0.5
    # Identical hourly energy for this many hours in a row (and above zero) is a stuck meter.
    stuck_hours: int = 6
    # Flagged hours this close together form one anomaly.
    merge_gap_h: int = 1
    # Excess relative to the expected energy of the span: at or above -> medium / high.
    severity_medium: float = 0.25
    severity_high: float = 0.5
    min_excess_kwh: float = 0.5


class MonitorSettings(BaseModel):
    experiment: str = "wattflow-monitoring"
    # Windows: the current window is judged against a reference that ends where it starts.
    drift_window_days: int = 7
    drift_reference_days: int = 28
    # Evidently stattest for numerical columns; magnitude tests (wasserstein) are robust to the
    # autocorrelation of hourly series, which makes p-value tests (ks) flag everything.
    drift_method: str = "wasserstein"
    input_drift_threshold: float = 0.1
    # Residual shift, in reference standard deviations (normed Wasserstein), that counts as drift.
    residual_drift_threshold: float = 0.5
    residual_drift_min_buildings: int = 1
    # Which drift may trigger a retrain: model residuals (season-proof), seasonality-matched inputs, or either.
    drift_trigger: Literal["residuals", "inputs", "either"] = "residuals"
    drift_share_threshold: float = 0.5
    drift_consecutive_checks: int = 3
    # Seasonality-aware reference: reference rows of the same building, hour of the week and outdoor
    # temperature bin as each current row, drawn with replacement.
    temperature_bin_c: float = 4.0
    matched_draws: int = 3
    min_coverage: float = 0.5
    min_reference_hours: int = 72
    # Accuracy: judged on the last accuracy_window_days of served (non-fallback) forecasts.
    cv_rmse_threshold: float = 0.25
    nmbe_threshold: float = 0.10
    relative_degradation: float = 0.25
    accuracy_window_days: int = 7
    min_accuracy_hours: int = 72
    cooldown_days: int = 7
    min_new_hours: int = 24 * 7
    # A retrain helped when the new champion's MAE on the drifted period is lower by at least this share.
    retrain_min_improvement: float = 0.0
    # A retrain requested by monitoring learns from the older part of the data that arrived since the
    # champion's training and is judged on the newest share of it (whole days, at least the minimum).
    retrain_holdout_share: float = 0.5
    retrain_min_holdout_days: int = 2
    # ...and learns from that new data this many times over (a few new days among months of old ones would
    # otherwise barely move the weights). It refits the champion's configuration: no tuning study, which
    # ranks configurations on the old data.
    retrain_recent_weight: int = Field(5, ge=1)
    # The pooled input-drift test and the Evidently reports need rows, not per-building figures: each
    # building brings at most sample_rows / buildings (at least sample_min_per_building) rows to each of
    # them (matched current inputs, with matched_draws reference rows each; reference and current
    # residuals; accuracy pairs), so the pass's driver holds about (matched_draws + 4) x sample_rows rows
    # however large the portfolio. Below the bound every row is kept. The decision's residual drift,
    # accuracy and new-data hours never come from the sample.
    sample_rows: int = Field(200_000, ge=1)
    sample_min_per_building: int = Field(24, ge=1)
    # The residual-drift report shows at most this many buildings (drifted first, then by score).
    report_max_buildings: int = Field(200, ge=1)
    anomalies: AnomalySettings = Field(default_factory=AnomalySettings)


class SavingsSettings(BaseModel):
    """Measurement and verification of savings (IPMVP Option C, ASHRAE Guideline 14)."""

    experiment: str = "wattflow-savings"
    # Guideline 14's acceptance of an hourly baseline model.
    max_cv_rmse: float = 0.30
    max_abs_nmbe: float = 0.10
    # Savings are established when the FSU at `confidence` is at most `max_fsu` (G14: 50% at 68%).
    max_fsu: float = 0.50
    confidence: float = Field(0.68, gt=0, lt=1)
    # A level shift recorded by monitoring proposes a baseline of this many days before the accuracy
    # window the shift showed up in; that window (the installation) belongs to neither period.
    baseline_days: int = Field(42, ge=8)
    # The platform's LSTM as baseline: a small network trained on the baseline period only.
    lstm_units: int = 32
    lstm_epochs: int = 30
    # Six weeks give ~150 training windows: small batches make enough updates before early stopping.
    lstm_batch_size: int = 32
    lstm_patience: int = 3
    # Baselines the monthly DAG verifies with (the LSTM costs a training per building and month).
    monthly_models: list[str] = Field(default_factory=lambda: ["towt"])


class AirflowSettings(BaseModel):
    owner: str = "wattflow"
    # Where the hourly ingest/forecast DAGs start; catchup is safe because every step is idempotent.
    start_date: str = "2024-01-01"
    catchup: bool = False
    retries: int = 2
    retry_delay_s: int = 30
    max_retry_delay_s: int = 600
    task_timeout_min: int = 30
    training_timeout_min: int = 120
    training_pool: str = "training"
    training_pool_slots: int = 1
    sensor_source: Literal["simulator", "mqtt", "influx", "kafka"] = "simulator"
    weekly_retrain_cron: str = "0 3 * * 1"
    tune_trials: int = 3
    tune_timeout_s: int = 300
    # Metadata DB as a SQLAlchemy URL; empty means SQLite under $WATTFLOW_HOME/airflow. Production sets
    # postgresql+psycopg2://user:pass@host/airflow (from the environment, never a committed file).
    database_url: str = ""
    executor: str = "LocalExecutor"
    # Empty means the repository's dags/ and plugins/ folders.
    dags_folder: str = ""
    plugins_folder: str = ""
    load_examples: bool = False
    dags_are_paused_at_creation: bool = False
    # The API server with the UI (`make up`): loopback only unless set to e.g. 0.0.0.0.
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # Celery (the compose/Helm deployments): broker and result backend URLs; unused by other executors.
    celery_broker_url: str = ""
    celery_result_backend: str = ""


class DashboardSettings(BaseModel):
    """The facility managers' dashboard (`wattflow dashboard`)."""

    host: str = "127.0.0.1"
    port: int = 8050
    # HTTP basic authentication, on when both are set (compose and Kubernetes set them from secrets:
    # WATTFLOW_DASHBOARD__USERNAME / WATTFLOW_DASHBOARD__PASSWORD). `/healthz` stays open for probes.
    username: str = ""
    password: str = ""
    threads: int = 8  # request threads of the one server process
    # Browsers poll the tables' Delta versions this often; pages re-read only when a version moved.
    refresh_interval_s: float = 30.0
    # How long a table version read from the Delta log is trusted before the log is read again.
    version_ttl_s: float = 2.0
    # The building chart's default span, and the most points one trace sends to the browser
    # (longer spans are averaged into coarser buckets so the page stays fast on a year of data).
    chart_days: int = 14
    chart_max_points: int = 1500
    # Accuracy of the served model shown per building: served forecasts vs actuals over these days.
    accuracy_days: int = 7
    # The overview's anomaly table: the costliest anomalies that started within these days.
    anomaly_days: int = 28
    worst_anomalies: int = 10


class LineageSettings(BaseModel):
    """OpenLineage events of the pipeline steps (wattflow/lineage.py): Delta tables with their versions and
    MLflow model versions as datasets."""

    enabled: bool = True
    # Every event is appended to this file (relative paths resolve under WATTFLOW_HOME);
    # `wattflow lineage forecast` walks it back.
    file: Path = Path("lineage/events.jsonl")
    # An OpenLineage HTTP endpoint that receives every event as well, e.g. Marquez (http://marquez:5000 in
    # docker-compose); empty: the file only.
    url: str = ""
    # The jobs' namespace (datasets are named by where they live: delta://<lakehouse>, the tracking URI).
    namespace: str = "wattflow"


class KafkaSettings(BaseModel):
    """Kafka: the sensor stream's backbone (`wattflow ingest kafka`, `simulate publish --kafka`) and the
    forecasts topic applications consume; `make up` and the tests run a local KRaft broker from its jars."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # The local broker's controller listener (`make up`); the tests pick free ports.
    controller_port: int = 9093
    topic: str = "sensor-readings"
    forecasts_topic: str = "forecasts"
    # Publish each day-ahead forecast to forecasts_topic, keyed by building (the forecast step).
    publish_forecasts: bool = False
    group_id: str = "wattflow-ingest"
    # Static group membership (group.instance.id): a consumer restarted under the same id (a crash, a
    # deploy) takes its partitions back at once instead of waiting out the session timeout and a rebalance.
    # Empty: dynamic membership. Give each consumer process its own id (e.g. the pod name).
    instance_id: str = ""
    session_timeout_s: float = 45.0
    # Partitions of the topics the local broker and `ensure_topics` create.
    partitions: int = 3
    # A batch commits to Delta when it holds this many readings or is this old; while a commit runs, the
    # next batch may grow to backlog_factor times the count (group commit, as for MQTT).
    # bench/kafka.py: 100k readings a batch with a cap of 2x held p99 under 2 s at 100k readings/s on the
    # loaded 2-core machine; a cap of 4x let one slow commit grow the next batches into a multi-second stall.
    batch_max_readings: int = 100_000
    batch_max_age_s: float = 1.0
    batch_backlog_factor: int = 2
    # Messages fetched per poll: large polls keep the per-message Python cost low.
    poll_max_messages: int = 2000
    # Payload form of the publishers: "batch" (the compact columnar form) or "json" (a list of reading objects).
    payload_format: Literal["batch", "json"] = "batch"
    readings_per_message: int = 500
    # Prometheus metrics of `wattflow ingest kafka` (consumer lag, landed readings/s) on this port; 0: off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Further librdkafka properties for every client (security.protocol, sasl.*, ssl.*), passed as given;
    # secrets from the environment (WATTFLOW_KAFKA__CLIENT_CONFIG='{"sasl.password": ...}').
    client_config: dict[str, str] = Field(default_factory=dict)
    # The local broker: Maven coordinates (resolved into spark_jars_dir), heap and JVM options.
    broker_packages: list[str] = Field(
        default_factory=lambda: ["org.apache.kafka:kafka_2.13:4.4.0", "org.apache.logging.log4j:log4j-slf4j-impl:2.25.5"]
    )
    broker_heap: str = "512m"
    # Serial GC: one broker on a small, shared machine needs no parallel collector threads.
    broker_jvm_options: list[str] = Field(default_factory=lambda: ["-XX:+UseSerialGC"])
    broker_log_level: str = "WARN"
    connect_timeout_s: float = 30.0


class BacnetSettings(BaseModel):
    """`wattflow ingest bacnet`: the poller's own BACnet/IP identity, its pace and where readings go."""

    # Our own BACnet/IP address (``host[/prefix][:port]``). Loopback by default, as everything here listens on
    # 127.0.0.1; on a BMS network set the interface's address, e.g. ``192.168.10.5/24:47808``.
    local_address: str = "127.0.0.1:47808"
    device_instance: int = 599999  # our own device object's instance; unique on the BMS network
    poll_interval_s: float = 60.0  # readings are stamped with the interval slot they were read in
    # One request's timeout (BACnet's APDU timeout) and retries; a device that misses them is reported down.
    request_timeout_s: float = 3.0
    request_retries: int = 1
    # Objects per ReadPropertyMultiple: keeps a request inside a small device's APDU without segmentation.
    max_objects_per_request: int = 16
    sink: Literal["bronze", "mqtt", "kafka"] = "bronze"
    metrics_port: int = 0  # Prometheus metrics on 127.0.0.1:<port>; 0 = off


class StreamTriggerSettings(BaseModel):
    """Airflow's event-driven scheduling of the ingest DAG: messages on the sensor topic trigger a run (an
    AssetWatcher with the Kafka message-queue trigger, run by Airflow's triggerer), besides its schedule."""

    enabled: bool = False  # off: the ingest DAG runs on its schedule only (no triggerer consumer on a broker)
    topic: str = ""  # empty: kafka.topic
    # The Airflow connection the trigger's consumer uses; `wattflow.airflow_env` defines it from kafka.* settings.
    connection_id: str = "wattflow_kafka"
    # The trigger's own consumer group: it only notices messages, the ingest consumer (kafka.group_id) lands them.
    group_id: str = "wattflow-airflow-trigger"
    poll_interval_s: float = 5.0  # how long the trigger sleeps after a message it ignores (nothing to land)
    # Where a new trigger group starts: "latest" announces what arrives from now on; the backlog is the ingest
    # consumer's (its own group) and the hourly schedule's.
    auto_offset_reset: Literal["latest", "earliest"] = "latest"


class StreamingSettings(BaseModel):
    """Spark Structured Streaming, Kafka -> bronze (`wattflow ingest kafka-stream`, the cluster runner's stream)."""

    # Spark's Kafka connector, resolved into the jar cache with delta-spark and loaded by every session
    # (jars only load when the JVM starts).
    spark_kafka_package: str = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"
    # Under WATTFLOW_HOME unless absolute: the query's offsets and commits; the same checkpoint resumes it.
    checkpoint_dir: str = "checkpoints/kafka_bronze_sensor_readings"
    # Records per micro-batch (all partitions together): bounds a batch's memory on the driver.
    max_offsets_per_trigger: int = 200_000
    trigger_interval_s: float = 5.0
    starting_offsets: Literal["earliest", "latest"] = "earliest"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WATTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Path(".wattflow")
    buildings_file: Path = Path("config/buildings.yaml")
    mlflow_tracking_uri: str = ""
    # Where people open MLflow (`make up` serves it there); task links and the demo summary point at it.
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    # Where people open the Data Docs (`make up` serves $WATTFLOW_HOME/data_docs there over HTTP: Airflow's UI
    # shows no file:// link); the tasks' Data Docs links resolve to it.
    data_docs_url: str = "http://127.0.0.1:8090"
    # Where runs store artifacts when the tracking URI is a database (SQLite/PostgreSQL): empty means
    # mlflow_artifacts_dir; "s3://bucket/prefix" uses boto3 (MLFLOW_S3_ENDPOINT_URL and AWS_* from the
    # environment). Against a tracking server (http://...) the server's --artifacts-destination decides.
    mlflow_artifact_location: str = ""
    log_level: str = "INFO"
    log_json: bool = False

    lakehouse: LakehouseSettings = Field(default_factory=LakehouseSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    screen: ScreenSettings = Field(default_factory=ScreenSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    weather: WeatherSettings = Field(default_factory=WeatherSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    savings: SavingsSettings = Field(default_factory=SavingsSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    bacnet: BacnetSettings = Field(default_factory=BacnetSettings)
    stream_trigger: StreamTriggerSettings = Field(default_factory=StreamTriggerSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)

    @property
    def table_engine(self) -> str:
        """The Delta engine in effect: "spark" whenever the Spark runner is chosen, else lakehouse.engine."""
        return "spark" if self.compute.runner == "spark" else self.lakehouse.engine

    @property
    def spark_master_url(self) -> str:
        """The one Spark master of this process: Airflow's spark_default connection, compute.spark_master,
        or lakehouse.spark_master, first one set."""
        from wattflow.airflow_env import spark_master_from_connection

        return spark_master_from_connection(os.environ.get("AIRFLOW_CONN_SPARK_DEFAULT", "")) or \
            self.compute.spark_master or self.lakehouse.spark_master

    # Everything local lives under `home`; these derive from it so one variable moves it all.
    @property
    def lineage_file(self) -> Path:
        return self.lineage.file if self.lineage.file.is_absolute() else self.home / self.lineage.file

    @property
    def lakehouse_uri(self) -> str:
        return self.lakehouse.root_uri.rstrip("/") or str((self.home / "lakehouse").resolve())

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return (self.home / "mlflow" / "artifacts").resolve()

    @property
    def mlflow_artifact_root(self) -> str:
        return self.mlflow_artifact_location.rstrip("/") or self.mlflow_artifacts_dir.as_uri()

    @property
    def airflow_home(self) -> Path:
        return (self.home / "airflow").resolve()

    @property
    def model_base_path(self) -> Path:
        return (self.home / "models").resolve()

    @property
    def reports_dir(self) -> Path:
        return (self.home / "reports").resolve()

    @property
    def data_docs_dir(self) -> Path:
        return (self.home / "data_docs").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.home / "cache").resolve()

    @property
    def spark_jars_dir(self) -> Path:
        return Path(self.lakehouse.spark_jars_dir) if self.lakehouse.spark_jars_dir else self.cache_dir / "jars"


SETTINGS_FILE = "settings.env"


def home_settings_file(home: Path | None = None) -> Path:
    """`$WATTFLOW_HOME/settings.env`: settings that belong to a home (the demo's simulated world, say),
    so every process pointed at the home (a DAG task, `make up`, a backfill) agrees on them."""
    return (home or Path(os.environ.get("WATTFLOW_HOME", ".wattflow"))) / SETTINGS_FILE


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    # Later files win; WATTFLOW_* environment variables win over both.
    return Settings(_env_file=(".env", str(home_settings_file())))


def reset_settings() -> None:
    """Forget the cached settings (tests change WATTFLOW_* variables)."""
    get_settings.cache_clear()
