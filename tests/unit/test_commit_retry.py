"""The commit retry policy and the object-store safety check in settings."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from lakehouse.engine import CommitRetry, WriteConflict, WriteResult
from wattflow.settings import LakehouseSettings


class Conflict(Exception):
    pass


def _result() -> WriteResult:
    return WriteResult("bronze.sensor_readings", 7, 3, 1, 0)


def test_conflicts_are_retried_and_counted_then_the_commit_wins() -> None:
    outcomes = [Conflict("lost"), Conflict("lost again"), _result()]

    def attempt() -> WriteResult:
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    policy = CommitRetry(max_attempts=5, backoff_initial_s=0.0, backoff_max_s=0.0)
    result = policy.run("bronze.sensor_readings", attempt, lambda e: isinstance(e, Conflict))
    assert (result.version, result.rows_inserted, result.conflicts_retried) == (7, 3, 2)


def test_exhausted_retries_raise_write_conflict_naming_table_and_remedy() -> None:
    calls = []

    def attempt() -> WriteResult:
        calls.append(1)
        raise Conflict("Commit failed: a concurrent transaction added new data")

    policy = CommitRetry(max_attempts=3, backoff_initial_s=0.0, backoff_max_s=0.0)
    with pytest.raises(WriteConflict, match=r"bronze.sensor_readings: .* 3 times in a row .*COMMIT_MAX_ATTEMPTS"):
        policy.run("bronze.sensor_readings", attempt, lambda e: isinstance(e, Conflict))
    assert len(calls) == 3


def test_other_errors_are_not_retried() -> None:
    calls = []

    def attempt() -> WriteResult:
        calls.append(1)
        raise PermissionError("no write access to the bucket")

    with pytest.raises(PermissionError):
        CommitRetry(max_attempts=5).run("t", attempt, lambda e: isinstance(e, Conflict))
    assert len(calls) == 1


def test_backoff_is_jittered_doubling_and_capped() -> None:
    policy = CommitRetry(max_attempts=25, backoff_initial_s=0.02, backoff_max_s=2.0)
    rng = random.Random(1)
    for failed, cap in ((1, 0.02), (2, 0.04), (5, 0.32), (8, 2.0), (24, 2.0)):
        delays = [policy.delay_s(failed, rng) for _ in range(200)]
        assert 0.0 <= min(delays) and max(delays) <= cap
        assert max(delays) > 0.8 * cap and min(delays) < 0.2 * cap  # spread over the whole range


def test_settings_refuse_unsafe_s3_renames_and_carry_the_retry_policy() -> None:
    with pytest.raises(ValidationError, match="AWS_S3_ALLOW_UNSAFE_RENAME='true'.*conditional_put=etag"):
        LakehouseSettings(storage_options={"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})
    ok = LakehouseSettings(storage_options={"conditional_put": "etag"}, commit_max_attempts=9)
    assert CommitRetry.from_settings(ok) == CommitRetry(9, 0.02, 1.0)
    with pytest.raises(ValidationError):
        LakehouseSettings(commit_max_attempts=0)
