"""Spark settings derived from the one settings object: S3A from delta-rs storage options, the jar cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.spark_jars import JarResolutionError, _artifact, cached_jars, resolve_coordinate
from lakehouse.spark_session import s3a_hadoop_conf, session_conf, spark_packages
from wattflow.settings import LakehouseSettings, Settings


def test_s3a_config_mirrors_delta_rs_storage_options() -> None:
    conf = s3a_hadoop_conf(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_ACCESS_KEY_ID": "key",
            "aws_secret_access_key": "secret",  # object_store accepts either case
            "AWS_REGION": "eu-west-1",
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }
    )
    assert conf["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["fs.s3a.path.style.access"] == "true"
    assert conf["fs.s3a.endpoint.region"] == "eu-west-1"
    assert (conf["fs.s3a.access.key"], conf["fs.s3a.secret.key"]) == ("key", "secret")
    assert conf["fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    # s3:// URIs (delta-rs' form) go through S3A as well, so one table URI serves both engines.
    assert conf["fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"


def test_s3a_config_with_session_token_and_virtual_hosts() -> None:
    conf = s3a_hadoop_conf(
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true"}
    )
    assert conf["fs.s3a.session.token"] == "t"
    assert conf["fs.s3a.aws.credentials.provider"].endswith("TemporaryAWSCredentialsProvider")
    assert conf["fs.s3a.path.style.access"] == "false"
    assert "fs.s3a.endpoint" not in conf
    # No keys: S3A keeps the AWS default chain (environment, profile, instance role).
    assert "fs.s3a.aws.credentials.provider" not in s3a_hadoop_conf({"AWS_REGION": "us-east-1"})


def test_session_conf_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        lakehouse=LakehouseSettings(
            spark_master="spark://master:7077",
            spark_driver_memory="6g",
            spark_shuffle_partitions=16,
            root_uri="s3://bucket/lake",
            storage_options={"AWS_ENDPOINT_URL": "https://s3.example.org", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            spark_conf={"spark.executor.memory": "8g", "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"},
        ),
    )
    conf = session_conf(settings, [Path("/cache/a.jar"), Path("/cache/b.jar")])
    assert conf["spark.master"] == "spark://master:7077"
    assert conf["spark.driver.memory"] == "6g"
    assert conf["spark.sql.shuffle.partitions"] == "16"
    assert conf["spark.databricks.delta.snapshotPartitions"] == "16"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.jars"] == "/cache/a.jar,/cache/b.jar"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://s3.example.org"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.executor.memory"] == "8g"
    assert conf["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC -XX:TieredStopAtLevel=1"
    assert "spark.driver.bindAddress" not in conf  # only local mode pins the driver to loopback
    packages = spark_packages(settings)
    assert packages[0] == settings.lakehouse.delta_spark_package
    assert packages[1] == "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"  # Structured Streaming from Kafka
    assert packages[2].startswith("org.apache.hadoop:hadoop-aws:3.")
    local = Settings(home=tmp_path)
    assert spark_packages(local) == [local.lakehouse.delta_spark_package, local.streaming.spark_kafka_package]
    assert "spark.hadoop.fs.s3a.endpoint" not in session_conf(local, [])


def test_jar_cache_reads_a_complete_manifest_only(tmp_path: Path) -> None:
    coordinate = "io.delta:delta-spark_4.2_2.13:4.4.0"
    folder = tmp_path / "io.delta_delta-spark_4.2_2.13-4.4.0"
    (folder / "jars").mkdir(parents=True)
    (folder / "jars" / "io.delta_delta-spark_4.2_2.13-4.4.0.jar").write_bytes(b"PK")
    assert cached_jars(tmp_path, coordinate) is None  # no manifest: an interrupted resolution
    (folder / "manifest.txt").write_text("io.delta_delta-spark_4.2_2.13-4.4.0.jar\nio.delta_delta-storage-4.4.0.jar\n")
    assert cached_jars(tmp_path, coordinate) is None  # a listed jar is missing
    (folder / "jars" / "io.delta_delta-storage-4.4.0.jar").write_bytes(b"PK")
    assert [p.name for p in cached_jars(tmp_path, coordinate)] == [
        "io.delta_delta-spark_4.2_2.13-4.4.0.jar",
        "io.delta_delta-storage-4.4.0.jar",
    ]
    # A cached coordinate resolves without Spark or the network.
    assert len(resolve_coordinate(tmp_path, coordinate)) == 2
    with pytest.raises(JarResolutionError, match="not a Maven coordinate"):
        resolve_coordinate(tmp_path, "delta-spark")


def test_artifact_names_of_spark_and_ivy_jars() -> None:
    assert _artifact("parquet-hadoop-1.17.0.jar") == "parquet-hadoop"
    assert _artifact("zstd-jni-1.5.7-7.jar") == "zstd-jni"
    assert _artifact("delta-spark_4.2_2.13-4.4.0.jar") == "delta-spark_4.2_2.13"
    assert _artifact("jackson-datatype-jdk8-2.13.5.jar") == "jackson-datatype-jdk8"
