"""The one Spark session of a process, configured from settings: Delta, UTC, Arrow, and S3A for s3:// roots.

Spark allows a single JVM per Python process, so every `SparkEngine` shares this session. Settings that
only take effect at JVM start (master, driver memory, jars) are applied by the first caller; S3A
options are Hadoop configuration and are (re)applied on every call, so an engine for an s3:// root can
join a session started for local tables as long as the hadoop-aws jars were loaded at start.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from lakehouse.spark_jars import pyspark_hadoop_version, resolve_jars
from wattflow.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = get_logger(__name__)

_lock = threading.Lock()
_spark: "SparkSession | None" = None

S3_SCHEMES = ("s3://", "s3a://")
_TRUE = {"1", "true", "yes", "on"}


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEMES)


def _option(options: Mapping[str, str], *names: str) -> str | None:
    """A delta-rs/object_store storage option by any of its names, case-insensitively."""
    lowered = {k.lower(): v for k, v in options.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, ""):
            return str(value)
    return None


def s3a_hadoop_conf(storage_options: Mapping[str, str]) -> dict[str, str]:
    """Hadoop S3A settings equivalent to delta-rs storage options, so both engines reach the same store.

    ``s3://`` is mapped onto S3A too, so one table URI works in both engines.
    """
    conf = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.AbstractFileSystem.s3a.impl": "org.apache.hadoop.fs.s3a.S3A",
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    endpoint = _option(storage_options, "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "endpoint_url", "endpoint")
    if endpoint:
        conf["fs.s3a.endpoint"] = endpoint
        conf["fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    # object_store addresses custom endpoints path-style unless told otherwise; S3A must do the same.
    virtual_hosted = _option(storage_options, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "virtual_hosted_style_request")
    if endpoint or virtual_hosted is not None:
        conf["fs.s3a.path.style.access"] = str((virtual_hosted or "false").lower() not in _TRUE).lower()
    region = _option(storage_options, "AWS_REGION", "AWS_DEFAULT_REGION", "region")
    if region:
        conf["fs.s3a.endpoint.region"] = region
    key = _option(storage_options, "AWS_ACCESS_KEY_ID", "access_key_id")
    secret = _option(storage_options, "AWS_SECRET_ACCESS_KEY", "secret_access_key")
    token = _option(storage_options, "AWS_SESSION_TOKEN", "AWS_TOKEN", "session_token", "token")
    if key and secret:
        conf["fs.s3a.access.key"] = key
        conf["fs.s3a.secret.key"] = secret
        if token:
            conf["fs.s3a.session.token"] = token
            conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        else:
            conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    # Without keys S3A falls back to the AWS default chain (environment, profile, instance role), as delta-rs does.
    return conf


def spark_packages(settings: Any, *, with_s3: bool | None = None) -> list[str]:
    """Maven coordinates the session needs: delta-spark and the Kafka connector (Structured Streaming,
    lakehouse.streaming), plus hadoop-aws for an S3 lakehouse."""
    lake = settings.lakehouse
    packages = [lake.delta_spark_package, settings.streaming.spark_kafka_package, *lake.spark_extra_packages]
    if with_s3 is None:
        with_s3 = is_s3_uri(settings.lakehouse_uri)
    if with_s3:
        packages.append(lake.hadoop_aws_package or f"org.apache.hadoop:hadoop-aws:{pyspark_hadoop_version()}")
    return list(dict.fromkeys(packages))


def session_conf(settings: Any, jars: list[Path]) -> dict[str, str]:
    lake = settings.lakehouse
    conf = {
        "spark.master": settings.spark_master_url if hasattr(settings, "spark_master_url") else lake.spark_master,
        "spark.app.name": lake.spark_app_name,
        "spark.driver.memory": lake.spark_driver_memory,
        "spark.jars": ",".join(str(j) for j in jars),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Naive timestamps would otherwise shift with the machine's zone; every contract time is UTC.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(lake.spark_arrow_batch_rows),
        "spark.sql.shuffle.partitions": str(lake.spark_shuffle_partitions),
        "spark.default.parallelism": str(lake.spark_shuffle_partitions),
        # INT96 is Spark's legacy default; delta-rs and every modern reader expect INT64 microseconds.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # Retention is a policy number in settings (vacuum_retention_hours), checked there, not by Delta.
        "spark.databricks.delta.retentionDurationCheck.enabled": "false",
        # A MERGE that changes nothing must not add a version (idempotent re-runs).
        "spark.databricks.delta.skipRecordingEmptyCommits": "true",
        # Delta and file listing default to cluster-sized fan-outs (50 snapshot partitions, 10,000 listing
        # tasks per VACUUM); on a few cores the task overhead dwarfs the work, so they follow the one knob.
        "spark.databricks.delta.snapshotPartitions": str(lake.spark_shuffle_partitions),
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(lake.spark_shuffle_partitions),
        # The MERGE source is an in-memory Arrow batch, deterministic by construction: no need to copy it first.
        "spark.databricks.delta.merge.materializeSource": "none",
        "spark.ui.enabled": str(lake.spark_ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str((settings.home / "spark-warehouse").resolve()),
    }
    if conf["spark.master"].startswith("local"):
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    if is_s3_uri(settings.lakehouse_uri):
        conf.update({f"spark.hadoop.{k}": v for k, v in s3a_hadoop_conf(settings.lakehouse.storage_options).items()})
    for key, value in lake.spark_conf.items():
        # JVM flags add to the UTC default instead of replacing it.
        conf[key] = f"{conf[key]} {value}" if key.endswith("extraJavaOptions") and key in conf else value
    return conf


def apply_s3a(spark: "SparkSession", storage_options: Mapping[str, str]) -> None:
    """Point a running session's S3A client at the store the storage options describe."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for k, v in s3a_hadoop_conf(storage_options).items():
        hadoop.set(k, v)


def get_spark(settings: Any, *, with_s3: bool | None = None) -> "SparkSession":
    """The process's Spark session, started from settings on first use.

    `with_s3=True` loads the hadoop-aws jars even when the lakehouse root is local, for a process
    that will also open s3:// tables later (jars can only be added when the JVM starts).
    """
    from pyspark.sql import SparkSession

    global _spark
    with _lock:
        spark = _spark if _spark is not None and _spark.sparkContext._jsc is not None else None
        spark = spark or SparkSession.getActiveSession() or SparkSession._instantiatedSession
        if spark is None:
            conf = session_conf(settings, [])
            # Python workers on executors run the interpreter the *driver* names in PYSPARK_PYTHON (not
            # spark.pyspark.python, which only spark-submit reads); the system Python has no pyarrow.
            os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
            jars = resolve_jars(Path(settings.spark_jars_dir), spark_packages(settings, with_s3=with_s3))
            builder = SparkSession.builder
            for k, v in session_conf(settings, jars).items():
                builder = builder.config(k, v)
            spark = builder.getOrCreate()
            spark.sparkContext.setLogLevel(settings.lakehouse.spark_log_level)
            _spark = spark
            log.info("spark.started", master=spark.sparkContext.master, version=spark.version, jars=len(jars))
        if is_s3_uri(settings.lakehouse_uri):
            apply_s3a(spark, settings.lakehouse.storage_options)
        return spark


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    global _spark
    with _lock:
        spark = _spark or SparkSession.getActiveSession() or SparkSession._instantiatedSession
        if spark is not None:
            spark.stop()
        _spark = None
