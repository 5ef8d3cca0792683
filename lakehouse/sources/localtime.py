"""Local wall-clock timestamps to UTC, across DST, with typed errors for what cannot be decided.

Meter exports usually carry naive local timestamps. Two clocks occur in practice:

- ``wall``: the clock follows DST. In the autumn hour that repeats, each local time appears twice; the
  first occurrence (in file order) is the summer-time instant, the second the winter-time one (inferred
  from the point where the clock steps back). In the spring hour that does not exist, no reading can be
  stamped: a file with readings there is not on a DST clock, which `NonexistentLocalTimes` says.
- ``standard``: the logger never switches (standard time all year, common for data loggers and for the
  UCI appliances data set); UTC is local minus the zone's standard offset, all year.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

Clock = Literal["wall", "standard"]


class LocalTimeError(ValueError):
    """Local timestamps that do not map to exactly one UTC instant; `rows` are 0-based file rows."""

    def __init__(self, message: str, rows: list[int], values: list[str]) -> None:
        self.rows = rows
        self.values = values
        super().__init__(message)


class NonexistentLocalTimes(LocalTimeError):
    pass


class AmbiguousLocalTimes(LocalTimeError):
    pass


@dataclass(frozen=True)
class Conversion:
    utc: pd.Series  # tz-aware UTC, same index as the input
    clock: Clock
    timezone: str
    ambiguous_resolved: int  # local times in a repeated hour, placed by order


def _preview(values: pd.Series, limit: int = 6) -> list[str]:
    return [str(v) for v in values.head(limit)]


def local_to_utc(local: pd.Series, timezone: str, clock: Clock = "wall") -> Conversion:
    """Convert naive local timestamps (file order) to UTC; offset-aware values are converted as they are."""
    tz = ZoneInfo(timezone)
    if getattr(local.dt, "tz", None) is not None:
        return Conversion(local.dt.tz_convert("UTC"), clock, timezone, 0)
    if clock == "standard":
        return Conversion(_standard_clock(local, tz), clock, timezone, 0)

    as_summer = local.dt.tz_localize(tz, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
    as_winter = local.dt.tz_localize(tz, ambiguous=np.zeros(len(local), dtype=bool), nonexistent="NaT")
    nonexistent = as_summer.isna() & local.notna()
    if nonexistent.any():
        rows = np.flatnonzero(nonexistent.to_numpy())
        values = local[nonexistent]
        raise NonexistentLocalTimes(
            f"{len(rows)} timestamp(s) fall in a local hour that does not exist in {timezone} (the DST spring "
            f"gap), e.g. {', '.join(_preview(values))} (rows {', '.join(str(r) for r in rows[:6])}). A clock "
            "that follows DST cannot produce them: the file is probably kept in standard time all year; "
            "if so, use clock 'standard' (--clock standard).",
            rows.tolist(),
            _preview(values, 1000),
        )
    ambiguous = (as_summer != as_winter) & as_summer.notna()
    if not ambiguous.any():
        return Conversion(as_summer.dt.tz_convert("UTC"), clock, timezone, 0)

    summer = _infer_summer(local, ambiguous.to_numpy())
    undecided = ambiguous.to_numpy() & np.isnan(summer)
    if undecided.any():
        rows = np.flatnonzero(undecided)
        raise AmbiguousLocalTimes(
            f"{len(rows)} timestamp(s) in the repeated autumn hour of {timezone} cannot be placed: the clock "
            f"never steps back around them, e.g. {', '.join(_preview(local.iloc[rows]))} (rows "
            f"{', '.join(str(r) for r in rows[:6])}). Export with UTC offsets or in UTC.",
            rows.tolist(),
            _preview(local.iloc[rows], 1000),
        )
    is_summer = np.where(ambiguous.to_numpy(), summer == 1.0, True)
    utc = local.dt.tz_localize(tz, ambiguous=is_summer, nonexistent="raise").dt.tz_convert("UTC")
    return Conversion(utc, clock, timezone, int(ambiguous.sum()))


def _infer_summer(local: pd.Series, ambiguous: np.ndarray) -> np.ndarray:
    """1.0 for summer time, 0.0 for winter time, NaN where undecidable; per repeated hour, by file order.

    Within each transition (the ambiguous rows of one night, in file order), the clock steps back at the
    first row whose local time is not after the previous one: rows before it are summer time, rows from
    it on are winter time. With no step back, rows are decidable only if the hour appears twice.
    """
    out = np.full(len(local), np.nan)
    idx = np.flatnonzero(ambiguous)
    values = local.to_numpy()[idx]
    nights = pd.Series(values).dt.floor("D").to_numpy()
    for night in np.unique(nights):
        pos = idx[nights == night]
        times = local.to_numpy()[pos]
        steps_back = np.flatnonzero(times[1:] <= times[:-1])
        if len(steps_back):
            cut = steps_back[0] + 1
            out[pos[:cut]] = 1.0
            out[pos[cut:]] = 0.0
    return out


def _standard_clock(local: pd.Series, tz: ZoneInfo) -> pd.Series:
    """UTC = local - standard offset, where the standard offset is looked up per calendar day."""
    days = local.dt.normalize()
    offsets: dict[pd.Timestamp, timedelta] = {}
    for day in days.dropna().unique():
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
        offsets[pd.Timestamp(day)] = noon.utcoffset() - (noon.dst() or timedelta(0))
    offset = days.map(offsets)
    return (local - pd.to_timedelta(offset)).dt.tz_localize("UTC")
