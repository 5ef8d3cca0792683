"""Meter exports (CSV, Parquet, a .zip holding one CSV) into bronze readings and weather.

A wide file (one row per timestamp, one column per quantity) is mapped by name: the timestamp column, the
energy column (Wh or kWh, per interval or a cumulative register), sensor columns (``indoor_temperature=T1``)
and weather columns (``temperature_c=T_out``). Local timestamps become UTC with `localtime.local_to_utc`.
The core, `file_records`, is frames in, tables out; `ingest_file` is the shell that reads the file,
updates the registry and lands both tables.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from lakehouse.bronze import WEATHER_VALUES, LandingResult, land_weather
from lakehouse.buildings import METRIC_UNITS, METRICS, Building, BuildingRegistry, Sensor
from lakehouse.sources.localtime import Clock, Conversion, local_to_utc

EnergyUnit = Literal["Wh", "kWh"]
EnergyKind = Literal["interval", "cumulative"]
WH_PER_KWH = 1000.0


class FileMappingError(ValueError):
    """The mapping names a column the file does not have, or a metric/weather field that does not exist."""


@dataclass(frozen=True)
class FileMapping:
    building_id: str
    timestamp_column: str
    energy_column: str | None = None
    energy_unit: EnergyUnit = "kWh"
    energy_kind: EnergyKind = "interval"
    timezone: str | None = None  # of the file's timestamps; default the building's
    clock: Clock = "wall"
    weather_columns: dict[str, str] = field(default_factory=dict)  # bronze.weather field -> file column
    sensor_columns: tuple[tuple[str, str], ...] = ()  # (metric, file column); sensor_id from the column
    site_id: str | None = None

    def sensors(self) -> list[tuple[str, str, str]]:
        """(sensor_id, metric, column) for every mapped reading column, energy first."""
        out = []
        if self.energy_column:
            metric = "energy" if self.energy_kind == "interval" else "energy_cumulative"
            out.append((sensor_id_for(self.energy_column), metric, self.energy_column))
        out += [(sensor_id_for(col), metric, col) for metric, col in self.sensor_columns]
        return out


def sensor_id_for(column: str) -> str:
    """A sensor id from a column name: lower case, runs of other characters become '_' ("RH_1" -> "rh_1")."""
    return re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_") or "sensor"


def parse_assignments(items: list[str] | None, option: str) -> list[tuple[str, str]]:
    """``["temperature_c=T_out", ...]`` -> [("temperature_c", "T_out"), ...], naming the bad item."""
    out = []
    for item in items or []:
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise FileMappingError(f"{option}: expected NAME=COLUMN, got {item!r}")
        out.append((name.strip(), column.strip()))
    return out


class FileReadError(FileMappingError):
    """The file is not a readable table of its type (corrupt, truncated, not CSV/Parquet at all)."""


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def read_table_file(path: str | Path) -> pd.DataFrame:
    """A CSV, CSV.gz, Parquet file, or a .zip with exactly one CSV, as a DataFrame (values as in the file)."""
    path = Path(path)
    return _read_table(path, _suffix(path), str(path))


def parse_file_bytes(content: bytes, suffix: str, name: str = "file") -> pd.DataFrame:
    """`read_table_file` for a file's bytes (an upload, a message attachment); `suffix` says its type."""
    return _read_table(io.BytesIO(content), suffix.lower(), name)


def _read_table(source: Path | io.BytesIO, suffix: str, label: str) -> pd.DataFrame:
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(source)
        if suffix == ".zip":
            with zipfile.ZipFile(source) as zf:
                members = [n for n in zf.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX")]
                if len(members) != 1:
                    raise FileMappingError(f"{label}: a .zip must hold exactly one CSV, found {members or 'none'}")
                with zf.open(members[0]) as fh:
                    return pd.read_csv(fh, skipinitialspace=True)
        if suffix in (".csv", ".csv.gz", ".txt"):
            return pd.read_csv(source, skipinitialspace=True, compression="gzip" if suffix == ".csv.gz" else None)
    except (FileMappingError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        # Whatever the reader's complaint (no columns, a bad quote, not a Parquet footer, bad UTF-8),
        # the operator needs the file, what is wrong and what to do, not a reader's traceback.
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileReadError(
            f"{label}: not a readable {suffix.lstrip('.')} table ({detail[:200]}); check the file type, or export it "
            "again as UTF-8 CSV with one header row"
        ) from err
    raise FileMappingError(f"{label}: unsupported file type {suffix!r} (csv, csv.gz, parquet, zip)")


@dataclass(frozen=True)
class FileRecords:
    readings: pa.Table  # raw reading records for `land_readings`
    weather: pa.Table | None  # raw weather records for `land_weather`
    conversion: Conversion
    unparsed_timestamps: int


def _check_columns(frame: pd.DataFrame, mapping: FileMapping) -> None:
    wanted = [("--timestamp-column", mapping.timestamp_column)]
    if mapping.energy_column:
        wanted.append(("--energy-column", mapping.energy_column))
    wanted += [("--sensor-column", c) for _, c in mapping.sensor_columns]
    wanted += [("--weather-column", c) for c in mapping.weather_columns.values()]
    missing = [f"{opt} {col!r}" for opt, col in wanted if col not in frame.columns]
    if missing:
        raise FileMappingError(f"column(s) not in the file: {', '.join(missing)}; the file has: {', '.join(map(str, frame.columns))}")
    bad_metrics = [m for m, _ in mapping.sensor_columns if m not in METRICS]
    if bad_metrics:
        raise FileMappingError(f"--sensor-column: unknown metric(s) {bad_metrics}; known: {', '.join(METRICS)}")
    bad_weather = [w for w in mapping.weather_columns if w not in WEATHER_VALUES]
    if bad_weather:
        raise FileMappingError(f"--weather-column: unknown field(s) {bad_weather}; known: {', '.join(WEATHER_VALUES)}")
    ids = [s for s, _, _ in mapping.sensors()]
    if len(set(ids)) != len(ids):
        raise FileMappingError(f"two mapped columns give the same sensor id: {ids}")


def _values(column: pd.Series, divide_by: float = 1.0) -> pa.Array:
    """Numbers scaled; anything non-numeric kept as its text so bronze quarantines exactly that row."""
    numbers = pd.to_numeric(column, errors="coerce")
    failed = numbers.isna() & column.notna()
    if not failed.any():
        return pa.array((numbers / divide_by).to_numpy(dtype=np.float64), type=pa.float64(), from_pandas=True)
    scaled = (numbers / divide_by).astype(object)
    scaled[failed] = column[failed].astype(str)
    return pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in scaled], pa.string())


_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2,4})\b")


def day_first(raw: pd.Series) -> bool:
    """Whether numeric dates in `raw` put the day first (31/01/2024), judged on the whole column.

    Element-wise guessing reads 05/12/2018 as 12 May next to 13/12/2018 as 13 December, silently. A
    column is day-first when some first field exceeds 12, month-first when some second field does; a
    column where both happen is not a date format and fails later as unparseable values.
    """
    parts = raw.dropna().astype(str).str.extract(_NUMERIC_DATE)
    if parts.empty or parts[0].isna().all():
        return False
    first, second = parts[0].dropna().astype(int), parts[1].dropna().astype(int)
    return bool((first > 12).any() and not (second > 12).any())


def parse_local_timestamps(raw: pd.Series, column: str = "timestamp") -> pd.Series:
    """The timestamp column as datetimes, one format for the whole column; a cell that is not a date and
    time becomes NaT (quarantined).

    Typed datetimes (Parquet) are kept. Anything else is read as text, numbers included: a bare number
    is no timestamp a meter export means (pandas would take it as nanoseconds since 1970).
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw
    text = raw.where(raw.isna(), raw.astype(str))
    try:
        with warnings.catch_warnings():
            # Mixed offsets come back as objects (refused just below); pandas' warning about it is noise.
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.to_datetime(text, errors="coerce", format="mixed", dayfirst=day_first(text))
    except (ValueError, TypeError, OverflowError) as err:  # e.g. local times mixed with UTC offsets
        parsed, detail = None, str(err).splitlines()[0] if str(err) else type(err).__name__
    else:
        detail = "values with and without a UTC offset"
    if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
        raise FileMappingError(
            f"--timestamp-column {column!r}: cannot read it as one clock ({detail}); export every timestamp either "
            "in local time without an offset, or with its UTC offset"
        )
    return parsed


def file_records(frame: pd.DataFrame, mapping: FileMapping, timezone: str, site_id: str) -> FileRecords:
    """The file's rows as raw reading records (long: one per sensor and timestamp) and weather records."""
    _check_columns(frame, mapping)
    raw_ts = frame[mapping.timestamp_column]
    parsed = parse_local_timestamps(raw_ts, mapping.timestamp_column)
    unparsed = parsed.isna() & raw_ts.notna()
    conversion = local_to_utc(parsed, timezone, mapping.clock)
    utc = conversion.utc
    if unparsed.any():  # the raw text travels on, so bronze quarantines it as an unparseable timestamp
        ts_col = pa.array([str(r) if bad else t.isoformat() for r, t, bad in zip(raw_ts, utc, unparsed)], pa.string())
    else:
        # safe=False: a sub-microsecond part is truncated, as Delta's timestamp holds microseconds.
        ts_col = pa.Array.from_pandas(utc).cast(pa.timestamp("us", tz="UTC"), safe=False)

    n = len(frame)
    blocks = []
    for sensor_id, metric, column in mapping.sensors():
        divide_by = WH_PER_KWH if metric.startswith("energy") and mapping.energy_unit == "Wh" else 1.0
        blocks.append(
            pa.table(
                {
                    "building_id": pa.array([mapping.building_id] * n, pa.string()),
                    "sensor_id": pa.array([sensor_id] * n, pa.string()),
                    "metric": pa.array([metric] * n, pa.string()),
                    "ts": ts_col,
                    "value": _values(frame[column], divide_by),
                    "unit": pa.array([METRIC_UNITS[metric]] * n, pa.string()),
                }
            )
        )
    if blocks:
        # Mixed value types (a column with a bad cell is text) unify as text; bronze parses both.
        if len({b.schema.field("value").type for b in blocks}) > 1:
            blocks = [b.set_column(4, "value", b.column("value").cast(pa.string())) for b in blocks]
        readings = pa.concat_tables(blocks)
    else:
        readings = pa.table({k: pa.array([], pa.string()) for k in ("building_id", "sensor_id", "metric", "ts", "value", "unit")})

    weather = None
    if mapping.weather_columns:
        cols: dict[str, Any] = {
            "site_id": pa.array([site_id] * n, pa.string()),
            "kind": pa.array(["observation"] * n, pa.string()),
            "ts": ts_col,
        }
        for name, column in mapping.weather_columns.items():
            cols[name] = _values(frame[column])
        weather = pa.table(cols)
    return FileRecords(readings, weather, conversion, int(unparsed.sum()))


def ensure_registered(
    registry: BuildingRegistry, mapping: FileMapping, timezone: str | None, **building_fields: Any
) -> tuple[Building, bool, list[str]]:
    """The building with every mapped sensor registered; (building, changed, guessed fields)."""
    from lakehouse.registry_file import building_for_timezone

    guessed: list[str] = []
    try:
        building = registry.get(mapping.building_id)
        changed = False
    except KeyError:
        if not timezone:
            raise FileMappingError(
                f"building {mapping.building_id!r} is not in the registry: give --timezone so it can be added"
            ) from None
        building, guessed = building_for_timezone(
            mapping.building_id, timezone, site_id=mapping.site_id, **{k: v for k, v in building_fields.items() if v is not None}
        )
        changed = True
    sensors = list(building.sensors)
    for sensor_id, metric, _ in mapping.sensors():
        existing = building.sensor(sensor_id)
        if existing is None:
            sensors.append(Sensor(sensor_id=sensor_id, metric=metric, unit=METRIC_UNITS[metric]))
            changed = True
        elif existing.metric != metric:
            raise FileMappingError(
                f"sensor {sensor_id!r} of building {building.building_id!r} measures {existing.metric!r} in the "
                f"registry, but the file maps it as {metric!r}"
            )
    if changed:
        building = building.model_copy(update={"sensors": sensors})
    return building, changed, guessed


@dataclass(frozen=True)
class FileIngestResult:
    path: str
    rows: int
    readings: LandingResult
    weather: LandingResult | None
    building: Building
    registry_changed: bool
    guessed_fields: list[str]
    clock: str
    timezone: str
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None


def ingest_file(
    path: str | Path,
    mapping: FileMapping,
    *,
    engine: Any | None = None,
    registry_file: str | Path | None = None,
    now: Any | None = None,
    **building_fields: Any,
) -> FileIngestResult:
    """Read a meter export, register its building and sensors if new, land readings and weather in bronze.

    Re-ingesting the same file changes nothing: the registry file stays as it is and both upserts find
    every row already there.
    """
    from lakehouse.engine import get_engine
    from lakehouse.registry_file import load_registry, mirror_registry, upsert_building
    from lakehouse.sources.screen import land_source_readings

    path = Path(path)
    engine = engine or get_engine()
    registry = load_registry(registry_file)
    frame = read_table_file(path)
    _check_columns(frame, mapping)
    building, changed, guessed = ensure_registered(registry, mapping, mapping.timezone, **building_fields)
    timezone = mapping.timezone or building.timezone
    site_id = mapping.site_id or building.site_id
    # Convert before touching the registry: a file that fails (a DST gap) leaves no half-registered building.
    records = file_records(frame, mapping, timezone, site_id)
    if changed:
        registry = upsert_building(building, registry_file)
    mirror_registry(registry, engine)
    source = f"file:{path.name}"
    readings = land_source_readings(records.readings, source=source, registry=registry, engine=engine, now=now)
    weather = land_weather(records.weather, source=source, engine=engine, now=now) if records.weather is not None else None
    utc = records.conversion.utc.dropna()
    return FileIngestResult(
        path=str(path),
        rows=len(frame),
        readings=readings,
        weather=weather,
        building=building,
        registry_changed=changed,
        guessed_fields=guessed,
        clock=records.conversion.clock,
        timezone=timezone,
        first_ts=utc.min() if len(utc) else None,
        last_ts=utc.max() if len(utc) else None,
    )
