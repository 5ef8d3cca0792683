"""File ingest: the real UCI appliances data (Belgium, 10-minute steps) and DST-crossing meter exports."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lakehouse.engine import get_engine
from lakehouse.registry_file import load_registry, registry_path
from lakehouse.schemas import BUILDINGS, QUARANTINE_READINGS, SENSOR_READINGS, WEATHER
from lakehouse.sources.files import FileMapping, FileMappingError, ingest_file
from lakehouse.sources.localtime import NonexistentLocalTimes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
UCI_ZIP = REPO / "data" / "uci-appliances" / "energydata_complete.zip"
INDOOR_ROOMS = (1, 2, 3, 4, 5, 7, 8, 9)  # T6/RH_6 are outside, north side: not indoor sensors

UCI = FileMapping(
    building_id="uci-house",
    timestamp_column="date",
    energy_column="Appliances",
    energy_unit="Wh",
    energy_kind="interval",
    timezone="Europe/Brussels",
    clock="standard",
    weather_columns={"temperature_c": "T_out", "relative_humidity_pct": "RH_out", "wind_speed_ms": "Windspeed", "dew_point_c": "Tdewpoint"},
    sensor_columns=tuple(("indoor_temperature", f"T{i}") for i in INDOOR_ROOMS) + tuple(("indoor_humidity", f"RH_{i}") for i in INDOOR_ROOMS),
)


@pytest.fixture(scope="module")
def uci_frame() -> pd.DataFrame:
    with zipfile.ZipFile(UCI_ZIP) as zf, zf.open("energydata_complete.csv") as fh:
        return pd.read_csv(fh, skipinitialspace=True)


def test_uci_appliances_lands_in_utc_with_kwh_and_weather(wattflow_home: Path, uci_frame: pd.DataFrame) -> None:
    engine = get_engine()
    result = ingest_file(UCI_ZIP, UCI, engine=engine, floor_area_m2=280.0, use_type="residential")
    n = len(uci_frame)
    assert n == 19_735 and result.rows == n
    assert result.readings.landed == n * 17 and result.readings.quarantined == 0
    assert result.weather.landed == n

    energy = engine.read(SENSOR_READINGS, filters=[("metric", "=", "energy")]).to_pandas().sort_values("ts")
    assert len(energy) == n and set(energy["unit"]) == {"kWh"} and set(energy["sensor_id"]) == {"appliances"}
    assert energy["value"].sum() == pytest.approx(uci_frame["Appliances"].sum() / 1000.0)
    # Standard time all year: local minus one hour, unique and continuous through the DST switch.
    ts = energy["ts"].reset_index(drop=True)
    assert ts.is_unique and (ts.diff().dropna() == pd.Timedelta(minutes=10)).all()
    assert ts.iloc[0] == pd.Timestamp("2016-01-11 16:00", tz="UTC") and ts.iloc[-1] == pd.Timestamp("2016-05-27 17:00", tz="UTC")
    switch = energy[(energy["ts"] >= "2016-03-27 00:00Z") & (energy["ts"] < "2016-03-27 03:00Z")]
    assert len(switch) == 18  # three UTC hours, six readings each: nothing lost or doubled at the switch
    local_0200 = uci_frame.loc[uci_frame["date"] == "2016-03-27 02:00:00", "Appliances"].iloc[0]
    assert energy.loc[energy["ts"] == pd.Timestamp("2016-03-27 01:00", tz="UTC"), "value"].iloc[0] == local_0200 / 1000.0

    indoor = engine.read(SENSOR_READINGS, filters=[("sensor_id", "=", "t1")]).to_pandas()
    assert len(indoor) == n and indoor["value"].mean() == pytest.approx(uci_frame["T1"].mean())
    weather = engine.read(WEATHER).to_pandas()
    assert len(weather) == n and set(weather["site_id"]) == {"uci-house"} and set(weather["kind"]) == {"observation"}
    assert weather["temperature_c"].mean() == pytest.approx(uci_frame["T_out"].mean())
    assert (weather["issued_at"] == weather["ts"]).all()

    # The building joined the registry file (and its Delta mirror) with the timezone given.
    registry = load_registry()
    house = registry.get("uci-house")
    assert (house.timezone, house.country, house.floor_area_m2, len(house.sensors)) == ("Europe/Brussels", "BE", 280.0, 17)
    assert engine.read(BUILDINGS).column("building_id").to_pylist() == ["uci-house"]

    # Re-ingesting the same file changes nothing: no new Delta version anywhere, the registry file as it was.
    versions = {c.qualified_name: engine.version(c) for c in (SENSOR_READINGS, WEATHER, BUILDINGS)}
    registry_text = registry_path().read_text()
    again = ingest_file(UCI_ZIP, UCI, engine=engine)
    assert again.readings.readings.rows_inserted == 0 and again.readings.readings.rows_updated == 0
    assert again.weather.readings.rows_inserted == 0 and not again.registry_changed
    assert {c.qualified_name: engine.version(c) for c in (SENSOR_READINGS, WEATHER, BUILDINGS)} == versions
    assert registry_path().read_text() == registry_text


def test_uci_on_a_dst_clock_reports_the_nonexistent_hour(wattflow_home: Path) -> None:
    wall = FileMapping(building_id="uci-house", timestamp_column="date", energy_column="Appliances", energy_unit="Wh",
                       timezone="Europe/Brussels")
    with pytest.raises(NonexistentLocalTimes) as err:
        ingest_file(UCI_ZIP, wall)
    assert err.value.rows == [10854, 10855, 10856, 10857, 10858, 10859]
    assert err.value.values[0] == "2016-03-27 02:00:00"
    assert len(load_registry()) == 0  # nothing registered by a file that did not convert


def _fall_back_export() -> pd.DataFrame:
    """A New York meter export on a DST clock across 2023-11-05 (01:xx twice), cumulative Wh register."""
    local = pd.date_range("2023-11-04 23:00", "2023-11-05 01:45", freq="15min").strftime("%Y-%m-%d %H:%M").tolist()
    local += pd.date_range("2023-11-05 01:00", "2023-11-05 03:00", freq="15min").strftime("%Y-%m-%d %H:%M").tolist()
    register = 1_000_000 + np.arange(len(local)) * 250.0
    return pd.DataFrame({"Time stamp": local, "Register Wh": register, "Zone temp": 21.0 + np.arange(len(local)) / 100})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fall_back_export_is_continuous_in_utc(wattflow_home: Path, tmp_path: Path, fmt: str) -> None:
    frame = _fall_back_export()
    frame["Zone temp"] = frame["Zone temp"].astype(object)
    frame.loc[3, "Zone temp"] = "ERR"  # one bad cell: that reading is quarantined, its neighbours land
    path = tmp_path / f"meter.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.astype({"Zone temp": str}).to_parquet(path, index=False)
    mapping = FileMapping(building_id="nyc-1", timestamp_column="Time stamp", energy_column="Register Wh", energy_unit="Wh",
                          energy_kind="cumulative", timezone="America/New_York", sensor_columns=(("indoor_temperature", "Zone temp"),))
    engine = get_engine()
    result = ingest_file(path, mapping, engine=engine)
    assert result.rows == len(frame) == 21
    assert result.readings.landed == 2 * 21 - 1 and result.readings.reasons == {"non_numeric_value": 1}
    energy = engine.read(SENSOR_READINGS, filters=[("metric", "=", "energy_cumulative")]).to_pandas().sort_values("ts")
    assert energy["ts"].is_unique and (energy["ts"].diff().dropna() == pd.Timedelta(minutes=15)).all()
    assert energy["ts"].iloc[0] == pd.Timestamp("2023-11-05 03:00", tz="UTC")  # 23:00 EDT
    assert energy["ts"].iloc[-1] == pd.Timestamp("2023-11-05 08:00", tz="UTC")  # 03:00 EST
    assert energy["value"].iloc[0] == 1000.0 and energy["unit"].iloc[0] == "kWh"
    quarantined = engine.read(QUARANTINE_READINGS).to_pylist()
    assert quarantined[0]["sensor_id"] == "zone_temp" and "'ERR'" in quarantined[0]["reason"]
    assert load_registry().get("nyc-1").country == "US"


def test_mapping_errors_name_the_column(wattflow_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    _fall_back_export().to_csv(path, index=False)
    mapping = FileMapping(building_id="x", timestamp_column="Time stamp", energy_column="kWh", timezone="UTC")
    with pytest.raises(FileMappingError, match="--energy-column 'kWh'"):
        ingest_file(path, mapping)
    unregistered = FileMapping(building_id="x", timestamp_column="Time stamp", energy_column="Register Wh")
    with pytest.raises(FileMappingError, match="give --timezone"):
        ingest_file(path, unregistered)
