"""Concurrent writers and killed writers on one Delta table (delta-rs, local disk), in real processes.

Concurrency: four processes upsert overlapping keys (shared by every writer, across two date
partitions) and disjoint keys (their own) at the same instant, several upserts each, over many trials,
half of them racing to create the table. Every key must be there exactly once, every write must have
committed exactly one version, and each key must hold the value of the last committed write naming it.

Crash safety: a writer landing batch after batch is SIGKILLed at random moments; after each kill the
table opens at its last committed version with unique keys, and a re-run lands every reading once.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.integration import delta_writers as dw

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WRITERS = 4


@pytest.fixture(scope="module")
def pool():
    # spawn, not fork: delta-rs' tokio runtime does not survive a fork.
    with ProcessPoolExecutor(max_workers=WRITERS, mp_context=mp.get_context("spawn"), initializer=dw.warm_up) as executor:
        seen: set[int] = set()
        while len(seen) < WRITERS:  # every worker started and warmed up before the first race
            seen |= set(executor.map(dw.pid, range(WRITERS)))
        yield executor


def _steps(writer: int, trial: int, n_steps: int) -> list[list[int]]:
    overlap = [0, 1, 2, 3, 96, 97, 98, 99]  # every writer, two partitions
    return [overlap + [1000 + trial * 100 + writer * 20 + j * 4 + i for i in range(4)] for j in range(n_steps)]


def _final(uri: str, storage_options: dict[str, str] | None) -> dict[int, list[float]]:
    table = DeltaTable(uri, storage_options=storage_options).to_pyarrow_table(columns=["ts", "value"]).to_pylist()
    out: dict[int, list[float]] = {}
    for row in table:
        out.setdefault(dw.key_of(row["ts"]), []).append(row["value"])
    return out


def _race(pool, root: str, trial: int, existing: bool, storage_options: dict[str, str] | None = None) -> int:
    """One trial: four writers at the same instant, three upserts each; checks the table; returns retries."""
    n_steps = 3
    uri = f"{root}/bronze/sensor_readings"
    if existing:  # a table holding the overlap keys already, in both partitions
        seed = dw.readings([0, 1, 2, 3, 96, 97, 98, 99], -1.0, "seed")
        dw.engine_at(root, storage_options).upsert(dw.SENSOR_READINGS, seed)
    start_at = time.time() + 0.3
    futures = [
        pool.submit(dw.write_steps, root, w, _steps(w, trial, n_steps), start_at, storage_options) for w in range(WRITERS)
    ]
    writes = [rec for f in futures for rec in f.result(timeout=120)]

    final = _final(uri, storage_options)
    expected_keys = {k for w in writes for k in w["keys"]}
    assert set(final) == expected_keys  # no write lost
    assert all(len(v) == 1 for v in final.values()), {k: v for k, v in final.items() if len(v) > 1}
    # Each write changed every row it named, so each committed exactly one, distinct, version.
    first = 1 if existing else 0
    assert sorted(w["version"] for w in writes) == list(range(first, first + len(writes)))
    assert DeltaTable(uri, storage_options=storage_options).version() == first + len(writes) - 1
    # Latest wins: the value of the highest committed version naming the key.
    latest: dict[int, tuple[int, float]] = {}
    for w in writes:
        for k in w["keys"]:
            if k not in latest or w["version"] > latest[k][0]:
                latest[k] = (w["version"], w["value"])
    assert {k: v[0] for k, v in final.items()} == {k: v for k, (_, v) in latest.items()}
    # Counts agree with the table: inserts add up to the keys, nothing counted twice.
    assert sum(w["inserted"] for w in writes) == len(expected_keys) - (8 if existing else 0)
    return sum(w["retries"] for w in writes)


@pytest.mark.parametrize("existing", [False, True], ids=["create-race", "existing-table"])
def test_concurrent_upserts_keep_every_key_once_and_the_last_value(pool, tmp_path: Path, existing: bool) -> None:
    retries = sum(_race(pool, str(tmp_path / f"lake{trial}"), trial, existing) for trial in range(2))
    # Four writers on the same rows at the same instant must have collided and retried.
    assert retries > 0


def test_concurrent_upserts_on_s3_commit_through_conditional_writes(pool, s3_endpoint, s3_bucket: str) -> None:
    # The settings' S3 options: conditional put, no unsafe rename; moto refuses a second If-None-Match put.
    options = s3_endpoint.delta_storage_options()
    assert options["conditional_put"] == "etag" and "AWS_S3_ALLOW_UNSAFE_RENAME" not in options
    retries = sum(_race(pool, f"s3://{s3_bucket}/lake{trial}", trial, trial == 1, options) for trial in range(2))
    assert retries > 0


def _table_state(uri: str, version: int | None = None) -> tuple[int, dict[int, list[float]]]:
    table = DeltaTable(uri, version=version)
    rows = table.to_pyarrow_table(columns=["ts", "value"]).to_pylist()
    out: dict[int, list[float]] = {}
    for row in rows:
        out.setdefault(dw.key_of(row["ts"]), []).append(row["value"])
    return table.version(), out


def _whole_batches(state: dict[int, list[float]], n_batches: int) -> int:
    """Every key once, and each batch's new keys in whole or not at all; how many batches are in."""
    assert all(len(v) == 1 for v in state.values())
    landed = set(state)
    whole = 0
    for i in range(n_batches):
        new_keys = set(dw.batch_keys(i)) - set(dw.batch_keys(i - 1) if i else [])
        assert new_keys <= landed or not new_keys & landed  # a batch is in whole or not at all
        whole += new_keys <= landed
    return whole


def test_writer_killed_mid_commit_leaves_the_last_version_and_a_rerun_lands_each_reading_once(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    uri = f"{root}/bronze/sensor_readings"
    n_batches = 40
    rng = random.Random(16)
    kills, versions_seen = 0, []
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.delta_writers", root, str(n_batches)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if round_ == 0:
            assert proc.stdout.readline().startswith("landed")  # the table exists before the first kill
        time.sleep(rng.uniform(0.0, 0.5))  # then somewhere inside the stream of commits
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        version, state = _table_state(uri)
        # Readable at its last version, and every version since the last kill holds whole batches only.
        whole = _whole_batches(state, n_batches)
        for earlier in range(versions_seen[-1] + 1 if versions_seen else 0, version):
            _whole_batches(_table_state(uri, earlier)[1], n_batches)
        if round_ == 0:
            assert version == whole - 1  # one commit per landed batch, nothing half-committed in between
        else:
            # A restarted writer lands from batch 0 again: the overlaps it re-sends are real updates, so it
            # may commit again; it never loses a landed batch.
            assert version >= versions_seen[-1] and whole >= whole_before
        versions_seen.append(version)
        whole_before = whole
    assert kills == 3 and len(versions_seen) == 3

    rerun = subprocess.run(
        [sys.executable, "-m", "tests.integration.delta_writers", root, str(n_batches)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    _, state = _table_state(uri)
    expected = {}
    for i in range(n_batches):
        for k in dw.batch_keys(i):
            expected[k] = dw.batch_value(i)  # a later batch's overlap overwrites the earlier value
    assert {k: v for k, v in state.items()} == {k: [v] for k, v in expected.items()}
