"""Real production backends for integration suites: an S3 endpoint, an MLflow server (PostgreSQL's
fixtures live in tests/conftest.py: the end-to-end suite uses them too).

Each server starts once per session (on a free port, in a temp dir; see tests/servers.py) and only when
a test asks for it. Suites get a fresh database or bucket each, so they never see each other's state.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import MlflowServer, PostgresServer, S3Endpoint, mlflow_server, s3_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server; ``s3_endpoint.create_bucket(name)``, ``.environment()``, ``.delta_storage_options()``."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> str:
    """A fresh, empty bucket on the session's S3 endpoint."""
    return s3_endpoint.create_bucket(f"wattflow-test-{secrets.token_hex(4)}")


@pytest.fixture(scope="session")
def mlflow_tracking_server(
    postgres: PostgresServer, s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """infra/mlflow/entrypoint.sh: basic auth, PostgreSQL backend and auth stores, S3 artifacts."""
    bucket = s3_endpoint.create_bucket("wattflow-mlflow")
    workdir: Path = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(
        backend_store_uri=postgres.create_database("mlflow"),
        auth_database_uri=postgres.create_database("mlflow_auth"),
        artifacts_destination=f"s3://{bucket}/artifacts",
        s3=s3_endpoint,
        workdir=workdir,
        timeout_s=240,
    ) as server:
        yield server


# ---------------------------------------------------------------- Spark (one session per test run)


@pytest.fixture(scope="session")
def spark_cluster():
    """A Spark standalone cluster (a master and two one-core workers from pyspark's spark-class, loopback,
    free ports), started once per test run for every test that needs Spark, stopped at the end."""
    from lakehouse.spark_cluster import standalone_cluster
    from tests.servers import require_program

    require_program("java", "openjdk-17-jre-headless")
    with standalone_cluster(workers=2, cores=1, memory="1g") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark_session(spark_cluster, tmp_path_factory: pytest.TempPathFactory):
    """The process's one Spark session (starting one costs ~10 s), driving the session's standalone cluster,
    with delta-spark and the S3A jars (shipped to the executors through spark.jars).

    Jars resolve once into a cache shared by every run: WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR when set,
    else ~/.cache/wattflow/jars. Engines built later from any settings join this session.
    """
    import os

    from lakehouse.spark_session import get_spark, stop_spark
    from wattflow.settings import LakehouseSettings, Settings

    jars_dir = os.environ.get("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR") or str(Path.home() / ".cache" / "wattflow" / "jars")
    home = tmp_path_factory.mktemp("spark-home")
    # A test session lives for a minute or two: C2 compilation would cost more CPU than it saves.
    quick_jvm = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
                 "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1",
                 **{k: v for k, v in spark_cluster.driver_conf().items() if k != "spark.master"}}
    settings = Settings(home=home, lakehouse=LakehouseSettings(spark_jars_dir=jars_dir, spark_conf=quick_jvm,
                                                               spark_master=spark_cluster.master_url,
                                                               spark_shuffle_partitions=2))
    from lakehouse.spark_jars import JarResolutionError
    from tests.servers import MissingTool

    try:
        spark = get_spark(settings, with_s3=True)
    except JarResolutionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingTool(f"Spark's jars are not cached in {jars_dir} and could not be resolved ({first}): "
                          "`make bootstrap` downloads them once (python -m lakehouse.spark_jars --with-s3)") from None
    yield spark
    stop_spark()
    # py4j closes its gateway connections when they are garbage-collected at interpreter exit and logs that
    # at INFO; by then pytest has closed the stream logging writes to, and each close printed a "Logging
    # error" traceback after the summary. Close them now, while logging works, and keep py4j's INFO out.
    _close_py4j_gateway()


def _close_py4j_gateway() -> None:
    import logging

    from pyspark import SparkContext

    logging.getLogger("py4j").setLevel(logging.WARNING)
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()  # closes the client-server connections; the JVM exits with this process
        SparkContext._gateway = None
        SparkContext._jvm = None
