"""The building registry file: YAML in, a validated `BuildingRegistry` out, mirrored to `reference.buildings`.

Layout (see ``config/buildings.example.yaml``)::

    sites:
      - site_id: brussels-north
        timezone: Europe/Brussels      # site-level values are defaults every building inherits
        country: BE
        latitude: 50.85
        ...
        buildings:
          - building_id: hq
            floor_area_m2: 4200
            sensors:
              - {sensor_id: main_meter, metric: energy, unit: kWh}

Every error names the file, the line and the field (``buildings.yaml:14: sites[0].buildings[1].floor_area_m2:
Input should be greater than 0 (got -5)``), so a facility manager can fix the file without reading Python.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from lakehouse.buildings import Building, BuildingRegistry

SITE_FIELDS = (
    "site_id",
    "name",
    "timezone",
    "country",
    "latitude",
    "longitude",
    "grid_emission_factor_kg_per_kwh",
    "tariff_per_kwh",
    "currency",
    "use_type",
    "buildings",
)
# A site's value is the default for each of its buildings; a building may override it.
INHERITED = (
    "timezone",
    "country",
    "latitude",
    "longitude",
    "grid_emission_factor_kg_per_kwh",
    "tariff_per_kwh",
    "currency",
    "use_type",
)
BUILDING_FIELDS = tuple(Building.model_fields)
SENSOR_FIELDS = ("sensor_id", "metric", "unit", "offset", "scale", "bacnet")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class RegistryIssue:
    file: str
    line: int  # 1-based
    field: str  # dotted path, e.g. sites[0].buildings[1].floor_area_m2
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class RegistryFileError(ValueError):
    """The registry file does not validate; `issues` lists every problem with its line and field."""

    def __init__(self, file: str, issues: list[RegistryIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{file}: {len(issues)} problem(s) in the building registry\n{lines}")


def registry_path(settings: Any | None = None) -> Path:
    """Where the registry file lives: `settings.buildings_file`, relative paths under WATTFLOW_HOME.

    Relative to WATTFLOW_HOME rather than the working directory so that the CLI, Airflow tasks and tests
    (each with their own cwd) all find the same file, and one variable moves all local state.
    """
    from wattflow.settings import get_settings

    settings = settings or get_settings()
    path = Path(settings.buildings_file).expanduser()
    return path if path.is_absolute() else (Path(settings.home) / path).resolve()


# ---------------------------------------------------------------- YAML with line numbers


def _compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain Python values plus the 1-based line of every node, keyed by its path."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise RegistryFileError(file, [RegistryIssue(file, line, "(syntax)", str(getattr(err, "problem", err)))]) from None
    lines: dict[Path_, int] = {}
    constructor = yaml.SafeLoader("")

    def walk(node: yaml.Node | None, path: Path_) -> Any:
        if node is None:
            return None
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(constructor.construct_object(key_node))
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1  # the key's line, not the value's
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        return constructor.construct_object(node)

    return walk(root, ()), lines


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def _line_for(lines: dict[Path_, int], path: Path_) -> int:
    """The line of the deepest node on `path` that exists (a missing field points at its parent)."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1


@lru_cache(maxsize=1)
def _zone_countries() -> dict[str, tuple[str, float, float]]:
    """IANA zone -> (country, latitude, longitude) from tzdata's zone.tab."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    out: dict[str, tuple[str, float, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        country, coords, zone = line.split("\t")[:3]
        out[zone] = (country, *_iso6709(coords))
    return out


def _iso6709(coords: str) -> tuple[float, float]:
    # "+5050+00420" -> 50.833, 4.333; "+404251-0740023" has seconds.
    split = max(coords.rfind("+"), coords.rfind("-"))
    lat, lon = coords[:split], coords[split:]

    def dms(part: str, deg_digits: int) -> float:
        sign = -1.0 if part[0] == "-" else 1.0
        digits = part[1:]
        d, m, s = int(digits[:deg_digits]), int(digits[deg_digits : deg_digits + 2]), digits[deg_digits + 2 :]
        return sign * (d + m / 60 + (int(s) / 3600 if s else 0.0))

    return round(dms(lat, 2), 4), round(dms(lon, 3), 4)


def zone_location(timezone: str) -> tuple[str, float, float] | None:
    """Country and coordinates of a timezone's reference city (e.g. Europe/Brussels -> BE, 50.83, 4.33)."""
    return _zone_countries().get(timezone)


@lru_cache(maxsize=1)
def _holiday_countries() -> frozenset[str]:
    import holidays

    return frozenset(holidays.list_supported_countries())


# ---------------------------------------------------------------- validation


def _unknown_keys(
    mapping: Any, allowed: tuple[str, ...], path: Path_, file: str, lines: dict[Path_, int], what: str
) -> list[RegistryIssue]:
    if not isinstance(mapping, dict):
        return [RegistryIssue(file, _line_for(lines, path), _dotted(path), f"expected a mapping of {what} fields, got {mapping!r}")]
    return [
        RegistryIssue(
            file, _line_for(lines, (*path, k)), _dotted((*path, k)), f"unknown field {k!r} (allowed: {', '.join(allowed)})"
        )
        for k in mapping
        if k not in allowed
    ]


def parse_registry(text: str, file: str = "<registry>") -> BuildingRegistry:
    """Validate registry YAML text; raise `RegistryFileError` listing every problem with line and field."""
    data, lines = _compose(text, file)
    if data is None:
        return BuildingRegistry()
    issues: list[RegistryIssue] = []
    issues += _unknown_keys(data, ("sites",), (), file, lines, "registry")
    sites = data.get("sites") if isinstance(data, dict) else None
    if sites is None:
        sites = []
    if not isinstance(sites, list):
        issues.append(RegistryIssue(file, _line_for(lines, ("sites",)), "sites", "expected a list of sites"))
        sites = []
    buildings: list[Building] = []
    seen: dict[str, int] = {}
    for si, site in enumerate(sites):
        spath: Path_ = ("sites", si)
        site_issues = _unknown_keys(site, SITE_FIELDS, spath, file, lines, "site")
        issues += site_issues
        if not isinstance(site, dict):
            continue
        site_id = site.get("site_id")
        if not site_id:
            issues.append(RegistryIssue(file, _line_for(lines, spath), _dotted((*spath, "site_id")), "missing field 'site_id'"))
            continue
        blist = site.get("buildings") or []
        if not isinstance(blist, list):
            issues.append(RegistryIssue(file, _line_for(lines, (*spath, "buildings")), _dotted((*spath, "buildings")), "expected a list"))
            continue
        for bi, raw in enumerate(blist):
            bpath: Path_ = (*spath, "buildings", bi)
            b_issues = _unknown_keys(raw, BUILDING_FIELDS, bpath, file, lines, "building")
            if isinstance(raw, dict):
                for k, s in enumerate(raw.get("sensors") or []):
                    b_issues += _unknown_keys(s, SENSOR_FIELDS, (*bpath, "sensors", k), file, lines, "sensor")
            issues += b_issues
            if not isinstance(raw, dict):
                continue
            # Where each value came from: the building's own node, or the site it inherits from.
            origin: dict[str, Path_] = {}
            merged: dict[str, Any] = {"site_id": site_id}
            origin["site_id"] = (*spath, "site_id")
            for f in INHERITED:
                if f in site:
                    merged[f] = site[f]
                    origin[f] = (*spath, f)
            merged.setdefault("name", raw.get("building_id"))
            for f, v in raw.items():
                if f in BUILDING_FIELDS:
                    merged[f] = v
                    origin[f] = (*bpath, f)
            if "site_id" in raw and raw["site_id"] != site_id:
                issues.append(
                    RegistryIssue(file, _line_for(lines, (*bpath, "site_id")), _dotted((*bpath, "site_id")),
                                  f"{raw['site_id']!r} differs from the enclosing site {site_id!r}")
                )
            try:
                building = Building.model_validate(merged)
            except ValidationError as err:
                for e in err.errors():
                    loc = e["loc"]
                    head = str(loc[0]) if loc else ""
                    base = origin.get(head, (*bpath, head)) if head else bpath
                    path = (*base, *loc[1:])
                    got = f" (got {e['input']!r})" if e.get("type") != "missing" and not isinstance(e.get("input"), dict) else ""
                    issues.append(RegistryIssue(file, _line_for(lines, path), _dotted(path), f"{e['msg']}{got}"))
                continue
            issues += _semantic_issues(building, origin, bpath, file, lines)
            if building.building_id in seen:
                issues.append(
                    RegistryIssue(file, _line_for(lines, (*bpath, "building_id")), _dotted((*bpath, "building_id")),
                                  f"building_id {building.building_id!r} already defined on line {seen[building.building_id]}")
                )
                continue
            seen[building.building_id] = _line_for(lines, (*bpath, "building_id"))
            buildings.append(building)
    if issues:
        raise RegistryFileError(file, issues)
    return BuildingRegistry(buildings=buildings)


def _semantic_issues(
    b: Building, origin: dict[str, Path_], bpath: Path_, file: str, lines: dict[Path_, int]
) -> list[RegistryIssue]:
    """What pydantic's types cannot say: the timezone exists, the country has a holiday calendar."""
    out: list[RegistryIssue] = []

    def issue(f: str, msg: str) -> None:
        path = origin.get(f, (*bpath, f))
        out.append(RegistryIssue(file, _line_for(lines, path), _dotted(path), msg))

    try:
        ZoneInfo(b.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        issue("timezone", f"unknown IANA timezone {b.timezone!r} (e.g. 'Europe/Brussels')")
    if b.country not in _holiday_countries():
        issue("country", f"{b.country!r} is not an ISO 3166-1 alpha-2 code with a holiday calendar (e.g. 'BE')")
    if len(b.currency) != 3 or not b.currency.isalpha() or not b.currency.isupper():
        issue("currency", f"{b.currency!r} is not an ISO 4217 code (e.g. 'EUR')")
    return out


def load_registry(path: str | Path | None = None, *, missing_ok: bool = True) -> BuildingRegistry:
    """Load and validate the registry file (default: `registry_path()`); an absent file is an empty registry."""
    path = Path(path) if path is not None else registry_path()
    if not path.exists():
        if missing_ok:
            return BuildingRegistry()
        raise FileNotFoundError(f"building registry {path} does not exist")
    return parse_registry(path.read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------- writing


def dump_registry(registry: BuildingRegistry) -> str:
    """YAML text for a registry: buildings grouped by site, site-level values where all buildings agree."""
    sites: list[dict[str, Any]] = []
    for site_id in registry.site_ids():
        members = registry.buildings_at(site_id)
        shared = {f: getattr(members[0], f) for f in INHERITED if all(getattr(b, f) == getattr(members[0], f) for b in members)}
        site: dict[str, Any] = {"site_id": site_id, **shared, "buildings": []}
        for b in members:
            entry = {k: v for k, v in b.model_dump(exclude={"site_id", "sensors"}).items() if k not in shared}
            entry["sensors"] = [s.model_dump(exclude_none=True) for s in b.sensors]
            site["buildings"].append(entry)
        sites.append(site)
    return yaml.safe_dump({"sites": sites}, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)


def save_registry(registry: BuildingRegistry, path: str | Path | None = None) -> Path:
    """Write the whole registry (atomically: a reader never sees half a file). Comments are not kept."""
    path = Path(path) if path is not None else registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# wattflow building registry (see config/buildings.example.yaml for every field)\n" + dump_registry(registry)
    parse_registry(text, str(path))  # never write a file we could not load back
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def upsert_building(building: Building, path: str | Path | None = None) -> BuildingRegistry:
    """Add a building (or replace one with the same id) in the registry file and return the new registry.

    When the file exists, a new building is appended as text, so comments and layout survive; replacing an
    existing one rewrites the file.
    """
    path = Path(path) if path is not None else registry_path()
    current = load_registry(path)
    exists = building.building_id in current.building_ids()
    if exists:
        updated = BuildingRegistry(buildings=[building if b.building_id == building.building_id else b for b in current.buildings])
    else:
        updated = BuildingRegistry(buildings=[*current.buildings, building])
    if path.exists() and not exists:
        text = path.read_text(encoding="utf-8")
        appended = _append_site_text(text, building)
        if appended is not None:
            try:
                parse_registry(appended, str(path))
            except RegistryFileError:
                appended = None
        if appended is not None:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(appended, encoding="utf-8")
            tmp.replace(path)
            return load_registry(path)
    save_registry(updated, path)
    return updated


def _append_site_text(text: str, building: Building) -> str | None:
    """`text` with a new site entry holding `building` appended, or None when `sites:` is not last."""
    data, lines = _compose(text, "<registry>")
    if not isinstance(data, dict) or list(data)[-1:] != ["sites"] or not isinstance(data["sites"], list):
        return None
    # Indentation of the existing list items (block style), else two spaces.
    indent = 2
    for raw_line in text.splitlines():
        stripped = raw_line.lstrip(" ")
        if stripped.startswith("- ") and raw_line[: len(raw_line) - len(stripped)]:
            indent = len(raw_line) - len(stripped)
            break
    if "[" in text.split("sites:", 1)[-1][:5]:  # flow-style list: do not try to append text
        return None
    entry = {"site_id": building.site_id, "buildings": [{**building.model_dump(exclude={"site_id", "sensors"}),
                                                          "sensors": [s.model_dump(exclude_none=True) for s in building.sensors]}]}
    block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    block = "".join(" " * indent + ln + "\n" for ln in block.splitlines())
    if not data["sites"]:  # "sites: []" or "sites:" with nothing under it
        return None
    return text.rstrip("\n") + "\n" + block


def building_for_timezone(
    building_id: str,
    timezone: str,
    *,
    site_id: str | None = None,
    name: str | None = None,
    country: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    use_type: str = "unknown",
    floor_area_m2: float | None = None,
    grid_emission_factor_kg_per_kwh: float | None = None,
    tariff_per_kwh: float | None = None,
    currency: str | None = None,
    defaults: Any | None = None,
) -> tuple[Building, list[str]]:
    """A new building from little more than its timezone, plus the fields that were guessed.

    Country and location come from the timezone's reference city (tzdata's zone.tab); the rest from the
    `registry` settings defaults. The guessed field names are returned so the CLI can ask for an edit.
    """
    from wattflow.settings import get_settings

    d = defaults or get_settings().registry
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"field 'timezone': unknown IANA timezone {timezone!r}") from None
    place = zone_location(timezone)
    guessed: list[str] = []

    def pick(field: str, given: Any, fallback: Any) -> Any:
        if given is not None:
            return given
        guessed.append(field)
        return fallback

    if place is None and (country is None or latitude is None or longitude is None):
        raise ValueError(f"timezone {timezone!r} has no reference city; give its country, latitude and longitude "
                         "(`wattflow ingest file --country --latitude --longitude`, or the registry file)")
    building = Building(
        building_id=building_id,
        name=name or building_id,
        site_id=site_id or building_id,
        timezone=timezone,
        country=pick("country", country, place[0] if place else None),
        use_type=use_type,
        # Not guessed: a guessed area would set a plausible maximum the real meter breaks (issue 15).
        floor_area_m2=floor_area_m2,
        latitude=pick("latitude", latitude, place[1] if place else None),
        longitude=pick("longitude", longitude, place[2] if place else None),
        grid_emission_factor_kg_per_kwh=pick(
            "grid_emission_factor_kg_per_kwh", grid_emission_factor_kg_per_kwh, d.new_building_grid_emission_factor_kg_per_kwh
        ),
        tariff_per_kwh=pick("tariff_per_kwh", tariff_per_kwh, d.new_building_tariff_per_kwh),
        currency=pick("currency", currency, d.new_building_currency),
        sensors=[],
    )
    return building, guessed


# ---------------------------------------------------------------- the Delta mirror


def registry_fingerprint(registry: BuildingRegistry) -> str:
    return hashlib.sha256(registry.model_dump_json().encode()).hexdigest()[:16]


def mirror_registry(registry: BuildingRegistry, engine: Any | None = None):
    """Upsert the registry into `reference.buildings`. Unchanged buildings make no new Delta version.

    Buildings removed from the file stay in the table (history joins still need them); `WriteResult`
    says what changed.
    """
    from lakehouse.engine import get_engine
    from lakehouse.schemas import BUILDINGS

    engine = engine or get_engine()
    return engine.upsert(BUILDINGS, registry.to_arrow())


def load_and_mirror(path: str | Path | None = None, engine: Any | None = None) -> BuildingRegistry:
    """The registry every stage should use: loaded from the file and mirrored to the lakehouse."""
    registry = load_registry(path)
    if len(registry):
        mirror_registry(registry, engine)
    return registry

