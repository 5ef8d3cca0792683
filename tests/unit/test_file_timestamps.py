"""A meter export's numeric dates are read with one day/month order for the whole column."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehouse.sources.files import day_first, parse_local_timestamps


@settings(max_examples=60, deadline=None)
@given(st.lists(st.datetimes(min_value=pd.Timestamp("2000-01-01").to_pydatetime(), max_value=pd.Timestamp("2035-12-31").to_pydatetime()),
                min_size=1, max_size=40),
       st.sampled_from(["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M"]))
def test_a_column_round_trips_when_its_order_shows(stamps, fmt) -> None:
    # Each column carries one unambiguous date (13th of a month), as a year of hourly readings always does.
    stamps = [pd.Timestamp(s).floor("min") for s in stamps] + [pd.Timestamp("2020-03-13 08:00")]
    raw = pd.Series([s.strftime(fmt) for s in stamps], dtype=object)
    parsed = parse_local_timestamps(raw)
    assert parsed.tolist() == stamps
    assert day_first(raw) == fmt.startswith("%d")


def test_ambiguous_days_follow_the_columns_unambiguous_ones() -> None:
    # 05/12 next to 13/12 is 5 December, not 12 May.
    parsed = parse_local_timestamps(pd.Series(["05/12/2018 10:00", "13/12/2018 00:00"], dtype=object))
    assert parsed.tolist() == [pd.Timestamp("2018-12-05 10:00"), pd.Timestamp("2018-12-13 00:00")]
    # Text that is no date stays NaT so bronze quarantines exactly that row.
    assert parse_local_timestamps(pd.Series(["2018-12-05 10:00", "soon"], dtype=object)).isna().tolist() == [False, True]
