"""Resolve Spark's extra JVM jars (delta-spark, hadoop-aws) from Maven once, then use them offline.

Each Maven coordinate is resolved by Spark's own Ivy into its own folder under the jar cache,
``<cache>/<group>_<artifact>-<version>/jars/*.jar``, with a ``manifest.txt`` naming the jars written
last. A session start then passes those files as ``spark.jars`` and never touches the network; only a
coordinate that has no complete folder yet is resolved. No Maven or Ivy install is needed: Spark's
``spark-submit --packages`` does the resolution.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from wattflow.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.txt"
_COORDINATE = re.compile(r"^[\w.\-]+:[\w.\-]+:[\w.\-]+$")
# "<artifact>-<version>.jar", the version starting at the first "-<digit>" (zstd-jni-1.5.7-3.jar).
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d.*)\.jar$")


class JarResolutionError(RuntimeError):
    """A Maven coordinate could not be resolved; the message carries the coordinate and Ivy's output."""


def _folder(cache_dir: Path, coordinate: str) -> Path:
    group, artifact, version = coordinate.split(":")
    return cache_dir / f"{group}_{artifact}-{version}"


def cached_jars(cache_dir: Path, coordinate: str) -> list[Path] | None:
    """The jars of an already resolved coordinate, or None when it needs resolving."""
    manifest = _folder(cache_dir, coordinate) / MANIFEST
    if not manifest.is_file():
        return None
    jars = [manifest.parent / "jars" / name for name in manifest.read_text().split()]
    return jars if jars and all(j.is_file() for j in jars) else None


def pyspark_hadoop_version() -> str:
    """The Hadoop version PySpark ships (hadoop-aws must match it exactly)."""
    import pyspark

    found = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))
    if not found:
        raise JarResolutionError("PySpark ships no hadoop-client-api jar; set lakehouse.hadoop_aws_package explicitly")
    return Path(found[0]).name.removeprefix("hadoop-client-api-").removesuffix(".jar")


def _spark_submit() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return os.path.join(_find_spark_home(), "bin", "spark-submit")


def resolve_coordinate(cache_dir: Path, coordinate: str, timeout_s: float = 1800) -> list[Path]:
    """Download one coordinate with its runtime dependencies into the cache (no-op when cached)."""
    if not _COORDINATE.match(coordinate):
        raise JarResolutionError(f"not a Maven coordinate group:artifact:version: {coordinate!r}")
    jars = cached_jars(cache_dir, coordinate)
    if jars is not None:
        return jars
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = _folder(cache_dir, coordinate)
    # Resolve into a scratch folder and rename it into place, so an interrupted download never looks complete.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    noop = scratch / "noop.py"
    noop.write_text("")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    started = time.monotonic()
    log.info("spark_jars.resolve", coordinate=coordinate, cache=str(cache_dir))
    try:
        proc = subprocess.run(
            [
                _spark_submit(),
                "--master", "local[1]",
                "--conf", f"spark.jars.ivy={scratch}",
                "--packages", coordinate,
                str(noop),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        shutil.rmtree(scratch, ignore_errors=True)
        raise JarResolutionError(f"resolving {coordinate} took longer than {timeout_s:.0f} s") from err
    names = sorted(p.name for p in (scratch / "jars").glob("*.jar")) if (scratch / "jars").is_dir() else []
    if proc.returncode != 0 or not names:
        shutil.rmtree(scratch, ignore_errors=True)
        raise JarResolutionError(f"could not resolve {coordinate} from Maven: {proc.stderr[-2000:]}")
    # Ivy's download cache is only needed while resolving; the retrieved jars are what sessions use.
    shutil.rmtree(scratch / "cache", ignore_errors=True)
    noop.unlink()
    (scratch / MANIFEST).write_text("\n".join(names) + "\n")
    try:
        scratch.rename(target)
    except OSError:
        # Another process finished the same coordinate first; its copy is as good as ours.
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("spark_jars.resolved", coordinate=coordinate, jars=len(names), seconds=round(time.monotonic() - started, 1))
    jars = cached_jars(cache_dir, coordinate)
    if jars is None:
        raise JarResolutionError(f"{coordinate} resolved but {target} is incomplete")
    return jars


def _artifact(jar_name: str) -> str:
    """Artifact id of a Spark jar (``parquet-hadoop-1.17.0.jar``) or an Ivy one (``org.apache.parquet_parquet-hadoop-1.16.0.jar``)."""
    match = _JAR_NAME.match(jar_name)
    return match.group("artifact") if match else jar_name


def spark_provided_artifacts() -> set[str]:
    """Artifacts PySpark already has on its classpath (Hadoop client, Parquet, Jackson, log4j, ...)."""
    import pyspark

    return {_artifact(Path(p).name) for p in glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "*.jar"))}


def resolve_jars(cache_dir: Path, coordinates: Sequence[str]) -> list[Path]:
    """Every jar the coordinates need, resolved once; later calls read only the local cache.

    Transitive jars that Spark itself ships are left out: delta-spark's POM drags in older Hadoop
    client, Parquet and Jackson jars (through delta-kernel), which would only shadow Spark's own.
    """
    provided = spark_provided_artifacts()
    seen: dict[str, Path] = {}
    for coordinate in coordinates:
        for jar in resolve_coordinate(cache_dir, coordinate):
            # Ivy names retrieved jars "<group>_<artifact>-<version>.jar".
            if _artifact(jar.name.split("_", 1)[-1]) not in provided:
                seen.setdefault(jar.name, jar)
    return list(seen.values())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lakehouse.spark_jars [--with-s3]`: fill the jar cache (CI, image builds) and list it."""
    import argparse

    from wattflow.settings import get_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--with-s3", action="store_true", help="also hadoop-aws and the AWS SDK (s3:// lakehouses)")
    args = parser.parse_args(argv)
    from lakehouse.spark_session import spark_packages

    settings = get_settings()
    started = time.monotonic()
    jars = resolve_jars(Path(settings.spark_jars_dir), spark_packages(settings, with_s3=args.with_s3 or None))
    for jar in jars:
        print(jar)
    print(f"{len(jars)} jar(s) in {settings.spark_jars_dir} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
