from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wattflow.settings import Settings, get_settings, reset_settings

if TYPE_CHECKING:
    from tests.servers import PostgresServer

REPO = Path(__file__).resolve().parents[1]

# Great Expectations imports pyspark.sql.connect when pyspark is installed, and that module exits the process
# ("Skipping doctests") when its optional dependencies are missing and the main module has neither __spec__
# nor __file__, as a pytest-xdist worker's has not. Give it an empty file (spawned children re-run it).
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = str(Path(__file__).with_name("_worker_main.py"))


# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). Tests that share an expensive
# session fixture (the demo home, the Spark session) are marked to stay on one worker, so it is built once.
XDIST_GROUPS = {"demo_home": "demo", "spark": "spark", "kafka_broker": "kafka"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "demo_home" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS["demo_home"]))
        elif item.get_closest_marker("spark") is not None:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS["spark"]))
        elif "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS["kafka_broker"]))


class _GroupInNodeIds:
    """Put each test's xdist group into its node id, where the loadgroup scheduler reads it ("id@group").

    pytest-xdist 3.8 appends the suffix to `item._nodeid`, which pytest 9 no longer reads (a node's id is
    `item._id`), so without this every group was split over both workers and each built the demo home and
    a Spark session of its own (measured: ~3 min of a 14.5-min run)."""

    @pytest.hookimpl(trylast=True)  # after the marks above and after xdist's own hook
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
            return
        from _pytest.nodeid import NodeId

        for item in items:
            marks = item.iter_markers("xdist_group")
            groups = "_".join(sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}))
            if groups and hasattr(item, "_id") and not item.nodeid.endswith("@" + groups):
                item._id = NodeId.parse(f"{item.nodeid}@{groups}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GroupInNodeIds(), "wattflow-xdist-groups")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A test whose fixture finds a program or cache missing (tests.servers.MissingTool) FAILS with the one
    line that names it and how to install it: not a skip that hides it, not a setup error with a traceback."""
    outcome = yield
    if call.excinfo is None or type(call.excinfo.value).__name__ != "MissingTool":
        return
    report = outcome.get_result()
    report.outcome = "failed"
    report.when = "call"  # reported and counted as the test's failure, not as an error in its setup
    report.longrepr = _OneLine(f"missing: {call.excinfo.value}")


class _OneLine:
    """A failure's report that is one line, in the failures section and in `-ra`'s short summary alike."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.reprcrash = self  # the short summary prints `reprcrash.message`

    def toterminal(self, tw) -> None:
        tw.line(self.message, red=True)

    def __str__(self) -> str:
        return self.message


@pytest.fixture
def wattflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated WATTFLOW_HOME: every table, store and report of the test lives under it."""
    home = tmp_path / "wattflow-home"
    home.mkdir()
    monkeypatch.setenv("WATTFLOW_HOME", str(home))
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture
def settings(wattflow_home: Path) -> Settings:
    return get_settings()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    path = Path(os.environ.get("WATTFLOW_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL 15 cluster (Debian's binaries, run as the `postgres` account under root)."""
    # Imported here: `tests` is a package only from the repository root (python -m pytest), and most
    # suites never start a server.
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_database_url(postgres: PostgresServer) -> Callable[[str], str]:
    """Factory: ``postgres_database_url("airflow")`` creates an empty database and returns its
    ``postgresql+psycopg2://`` URL (e.g. for WATTFLOW_AIRFLOW__DATABASE_URL)."""
    return postgres.create_database


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """One Kafka 4 broker (KRaft, jars from the shared cache) for the whole session: `.address`, `.kill()`,
    `.start()`, `.restart()`, `.create_topics(names, partitions)`. Tests isolate themselves by topic and
    group names (`kafka_topic`); a test that kills the broker starts it again before it returns."""
    from lakehouse.kafka_broker import KafkaBroker, KafkaBrokerError
    from tests.servers import MissingTool, require_program
    from wattflow.settings import KafkaSettings, LakehouseSettings

    require_program("java", "openjdk-17-jre-headless")
    jars_dir = os.environ.get("WATTFLOW_LAKEHOUSE__SPARK_JARS_DIR") or str(Path.home() / ".cache" / "wattflow" / "jars")
    # A test session is short: C1 only starts the JVM faster than C2 would pay back.
    kafka = KafkaSettings(broker_jvm_options=["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
    broker_settings = Settings(home=tmp_path_factory.mktemp("kafka-home"),
                               lakehouse=LakehouseSettings(spark_jars_dir=jars_dir), kafka=kafka)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-broker"), settings=broker_settings)
    try:
        broker.start(timeout=120)
    except KafkaBrokerError as exc:
        if "resolve" in str(exc):
            raise MissingTool(str(exc).splitlines()[0]) from None
        raise
    yield broker
    broker.stop()


@pytest.fixture
def kafka_topic(kafka_broker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: ``kafka_topic(partitions=3)`` creates a fresh topic on the session's broker and returns its name."""
    import secrets

    def make(partitions: int = 3, prefix: str | None = None) -> str:
        import re

        # Kafka topic names allow letters, digits, '.', '_' and '-' only.
        name = re.sub(r"[^A-Za-z0-9._-]", "-", f"{prefix or request.node.name[:40]}-{secrets.token_hex(3)}")
        kafka_broker.create_topics([name], partitions)
        return name

    return make
