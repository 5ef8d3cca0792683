"""Local timestamps to UTC across DST: the repeated autumn hour by order, the spring gap reported."""

from __future__ import annotations

import pandas as pd
import pytest

from lakehouse.sources.localtime import AmbiguousLocalTimes, NonexistentLocalTimes, local_to_utc


def _local(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values)))


def test_fall_back_hour_is_placed_by_order() -> None:
    # New York, 2023-11-05: 01:00-01:59 happens twice (EDT, then EST).
    local = _local("2023-11-05 00:30", "2023-11-05 01:00", "2023-11-05 01:30", "2023-11-05 01:00", "2023-11-05 01:30", "2023-11-05 02:00")
    conv = local_to_utc(local, "America/New_York")
    utc = [t.strftime("%H:%M") for t in conv.utc]
    assert utc == ["04:30", "05:00", "05:30", "06:00", "06:30", "07:00"]
    assert conv.ambiguous_resolved == 4


def test_fall_back_with_one_copy_of_the_hour_cannot_be_placed() -> None:
    with pytest.raises(AmbiguousLocalTimes) as err:
        local_to_utc(_local("2023-11-05 00:30", "2023-11-05 01:30", "2023-11-05 02:30"), "America/New_York")
    assert err.value.rows == [1]


def test_spring_gap_is_reported_with_rows_and_a_hint() -> None:
    local = _local("2016-03-27 01:50", "2016-03-27 02:00", "2016-03-27 02:30", "2016-03-27 03:00")
    with pytest.raises(NonexistentLocalTimes) as err:
        local_to_utc(local, "Europe/Brussels")
    assert err.value.rows == [1, 2] and "--clock standard" in str(err.value)


def test_standard_clock_and_offset_aware_values() -> None:
    local = _local("2016-03-27 01:50", "2016-03-27 02:00", "2016-07-01 12:00")
    conv = local_to_utc(local, "Europe/Brussels", "standard")
    assert [t.isoformat() for t in conv.utc] == [
        "2016-03-27T00:50:00+00:00", "2016-03-27T01:00:00+00:00", "2016-07-01T11:00:00+00:00"
    ]
    aware = pd.Series(pd.to_datetime(["2016-07-01T12:00:00+02:00"]))
    assert local_to_utc(aware, "Europe/Brussels").utc.iloc[0].isoformat() == "2016-07-01T10:00:00+00:00"
