"""A local stand-in for the InfluxDB 2.x HTTP API, for tests: the endpoints wattflow uses, behaving as documented.

Implemented from InfluxDB's API reference (v2.7): ``POST /api/v2/write`` (line protocol, ``precision``
ns|us|ms|s, gzip bodies, 204 on success), ``POST /api/v2/query`` (Flux as JSON ``{"query": ...}`` or
``application/vnd.flux``; annotated CSV with ``#datatype``, ``#group``, ``#default`` rows, one table per
series), ``GET /health`` and ``GET|HEAD /ping``. It rejects what InfluxDB rejects, with InfluxDB's JSON
error bodies: a missing or wrong token (401 ``unauthorized access``), an unknown organization or bucket
(404), unparseable line protocol (400 ``invalid``), a field type conflict (422), an unbounded query
without ``range`` (400).

The Flux it evaluates is the subset a source reader needs: ``from(bucket:)``, ``range(start:, stop:)``
with RFC3339 or relative durations, ``filter(fn: (r) => ...)`` with ``==, !=, <, <=, >, >=``, ``and``,
``or``, ``not`` and parentheses over ``r.col`` / ``r["col"]``, ``limit(n:, offset:)`` (per table, as in
Flux) and ``sort(columns:, desc:)``. Any other function is answered with 400 naming it, so a test can
never pass on Flux the stand-in silently ignored. Production runs a real InfluxDB 2 (docker-compose).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

VERSION = "v2.7.6"
PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, Any], ...]
    time_ns: int


@dataclass
class Store:
    token: str
    org: str
    buckets: dict[str, dict[tuple, Any]] = field(default_factory=dict)  # bucket -> {(series, field, time): value}
    field_types: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (bucket, measurement, field) -> type
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, body) for assertions


# ---------------------------------------------------------------- line protocol


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, buf, i, in_quotes = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            buf.append(text[i : i + 2])
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        if c == sep and not in_quotes:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= \\\"])", r"\1", text)


def _field_value(raw: str, line: str) -> tuple[Any, str]:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise ValueError("unbalanced quotes")
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\"), "string"
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True, "boolean"
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False, "boolean"
    if raw.endswith("i"):
        return int(raw[:-1]), "integer"
    if raw.endswith("u"):
        return int(raw[:-1]), "unsigned"
    value = float(raw)
    return value, "float"


def parse_line_protocol(body: str, precision: str, now_ns: int) -> list[tuple[Point, dict[str, str]]]:
    """Points with their field types; raises ValueError("unable to parse '<line>': why") like InfluxDB."""
    out = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            sections = _split_unescaped(line, " ")
            sections = [s for s in sections if s != ""]
            if len(sections) < 2:
                raise ValueError("missing fields")
            if len(sections) > 3:
                raise ValueError("invalid field format")
            key, field_text = sections[0], sections[1]
            parts = _split_unescaped(key, ",")
            measurement = _unescape(parts[0])
            if not measurement:
                raise ValueError("missing measurement")
            tags = []
            for t in parts[1:]:
                k, sep, v = t.partition("=")
                if not sep or not k or not v:
                    raise ValueError("missing tag value")
                tags.append((_unescape(k), _unescape(v)))
            fields, types = [], {}
            for f in _split_unescaped(field_text, ","):
                k, sep, v = f.partition("=")
                if not sep or not k or v == "":
                    raise ValueError("missing field value")
                value, kind = _field_value(v, line)
                fields.append((_unescape(k), value))
                types[_unescape(k)] = kind
            if len(sections) == 3:
                if not re.fullmatch(r"-?\d+", sections[2]):
                    raise ValueError("bad timestamp")
                time_ns = int(sections[2]) * PRECISION_NS[precision]
            else:
                time_ns = now_ns
        except ValueError as err:
            raise ValueError(f"unable to parse '{line}': {err}") from None
        out.append((Point(measurement, tuple(sorted(tags)), tuple(fields), time_ns), types))
    return out


# ---------------------------------------------------------------- Flux (the subset)


TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:\\.|[^"\\])*")
  | (?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<duration>-?(?:\d+(?:ns|us|ms|mo|s|m|h|d|w|y))+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op>\|>|=>|==|!=|<=|>=|<|>|\(|\)|\[|\]|\{|\}|,|:|\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def tokenize(text: str) -> list[tuple[str, str]]:
    text = re.sub(r"//[^\n]*", "", text)
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ApiError(400, "invalid", f"compilation failed: error at {pos}: invalid character {text[pos:pos+10]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t, self.i = tokens, 0

    def peek(self, value: str | None = None) -> bool:
        return self.i < len(self.t) and (value is None or self.t[self.i][1] == value)

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.t):
            raise ApiError(400, "invalid", "compilation failed: unexpected end of query")
        tok = self.t[self.i]
        if value is not None and tok[1] != value:
            raise ApiError(400, "invalid", f"compilation failed: expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        calls = [self.call()]
        while self.peek("|>"):
            self.take("|>")
            calls.append(self.call())
        if self.i != len(self.t):
            raise ApiError(400, "invalid", f"compilation failed: unexpected {self.t[self.i][1]!r}")
        return calls

    def call(self) -> tuple[str, dict[str, Any]]:
        kind, name = self.take()
        if kind != "name":
            raise ApiError(400, "invalid", f"compilation failed: expected a function, got {name!r}")
        self.take("(")
        args: dict[str, Any] = {}
        while not self.peek(")"):
            _, key = self.take()
            self.take(":")
            args[key] = self.fn() if key == "fn" else self.value()
            if self.peek(","):
                self.take(",")
        self.take(")")
        return name, args

    def value(self) -> Any:
        kind, tok = self.take()
        if kind == "string":
            return json.loads(tok)
        if kind == "time":
            return datetime.fromisoformat(tok.replace("Z", "+00:00"))
        if kind == "duration":
            return ("duration", tok)
        if kind == "number":
            return float(tok) if "." in tok or "e" in tok.lower() else int(tok)
        if kind == "name" and tok in ("true", "false"):
            return tok == "true"
        if kind == "name" and tok == "now" and self.peek("("):
            self.take("(")
            self.take(")")
            return ("now",)
        if tok == "[":
            items = []
            while not self.peek("]"):
                items.append(self.value())
                if self.peek(","):
                    self.take(",")
            self.take("]")
            return items
        raise ApiError(400, "invalid", f"compilation failed: unsupported value {tok!r}")

    def fn(self) -> Any:
        self.take("(")
        _, param = self.take()
        self.take(")")
        self.take("=>")
        return ("fn", param, self.expr_or(param))

    def expr_or(self, r: str) -> Any:
        left = self.expr_and(r)
        while self.peek("or"):
            self.take()
            left = ("or", left, self.expr_and(r))
        return left

    def expr_and(self, r: str) -> Any:
        left = self.expr_not(r)
        while self.peek("and"):
            self.take()
            left = ("and", left, self.expr_not(r))
        return left

    def expr_not(self, r: str) -> Any:
        if self.peek("not"):
            self.take()
            return ("not", self.expr_not(r))
        if self.peek("("):
            self.take("(")
            inner = self.expr_or(r)
            self.take(")")
            return inner
        left = self.operand(r)
        kind, op = self.take()
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            raise ApiError(400, "invalid", f"compilation failed: unsupported operator {op!r}")
        return ("cmp", op, left, self.operand(r))

    def operand(self, r: str) -> Any:
        if self.peek(r):
            self.take(r)
            if self.peek("."):
                self.take(".")
                return ("col", self.take()[1])
            self.take("[")
            col = json.loads(self.take()[1])
            self.take("]")
            return ("col", col)
        return ("lit", self.value())


def _evaluate(expr: Any, row: dict[str, Any]) -> Any:
    op = expr[0]
    if op == "or":
        return _evaluate(expr[1], row) or _evaluate(expr[2], row)
    if op == "and":
        return _evaluate(expr[1], row) and _evaluate(expr[2], row)
    if op == "not":
        return not _evaluate(expr[1], row)
    if op == "col":
        return row.get(expr[1])
    if op == "lit":
        return expr[1]
    _, cmp, a, b = expr
    left, right = _evaluate(a, row), _evaluate(b, row)
    if left is None or right is None:
        return False  # Flux: a comparison with a missing column is false
    try:
        return {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[cmp]
    except TypeError:
        raise ApiError(400, "invalid", f"runtime error: cannot compare {type(left).__name__} and {type(right).__name__}") from None


def _to_time(value: Any, now: datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, tuple) and value[0] == "now":
        return now
    if isinstance(value, tuple) and value[0] == "duration":
        total, sign = 0.0, -1.0 if value[1].startswith("-") else 1.0
        for amount, unit in re.findall(r"(\d+)(ns|us|ms|mo|s|m|h|d|w|y)", value[1]):
            if unit in ("mo", "y"):
                raise ApiError(400, "invalid", "stand-in: calendar durations (mo, y) are not supported")
            total += int(amount) * DURATION_UNITS[unit]
        return now + timedelta(seconds=sign * total)
    if isinstance(value, int):
        return datetime.fromtimestamp(value, timezone.utc)
    raise ApiError(400, "invalid", f"range: cannot use {value!r} as a time")


def _rfc3339(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc)
    frac = ns % 1_000_000_000
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}".rstrip("0") + "Z" if frac else base + "Z"


FLUX_TYPES = {"float": "double", "integer": "long", "unsigned": "unsignedLong", "string": "string", "boolean": "boolean"}


def run_flux(store: Store, query: str, now: datetime) -> str:
    calls = Parser(tokenize(query)).pipeline()
    if not calls or calls[0][0] != "from":
        raise ApiError(400, "invalid", "stand-in: a query must start with from(bucket: ...)")
    bucket = calls[0][1].get("bucket")
    if bucket not in store.buckets:
        raise ApiError(404, "not found", f'failed to initialize execute state: could not find bucket "{bucket}"')
    if len(calls) < 2 or calls[1][0] != "range":
        raise ApiError(
            400, "invalid",
            f'error calling function "yield" @1:1-1:1: cannot submit unbounded read to "{bucket}"; try bounding \'from\' with a call to \'range\'',
        )
    rng = calls[1][1]
    start = _to_time(rng.get("start"), now)
    stop = _to_time(rng.get("stop", ("now",)), now)
    start_ns, stop_ns = int(start.timestamp() * 1e9), int(stop.timestamp() * 1e9)
    with store.lock:
        items = list(store.buckets[bucket].items())
    rows = []
    for (measurement, tags, field_name, time_ns), value in items:
        if start_ns <= time_ns < stop_ns:
            row = {"_measurement": measurement, "_field": field_name, "_value": value, "_time": time_ns, **dict(tags)}
            row["_type"] = store.field_types[(bucket, measurement, field_name)]
            rows.append(row)
    limit: tuple[int, int] | None = None
    sort_spec: tuple[list[str], bool] | None = None
    for name, args in calls[2:]:
        if name == "filter":
            fn = args.get("fn")
            if not fn:
                raise ApiError(400, "invalid", "filter: missing required argument fn")
            rows = [r for r in rows if _evaluate(fn[2], r)]
        elif name == "limit":
            limit = (int(args["n"]), int(args.get("offset", 0)))
        elif name == "sort":
            sort_spec = (list(args.get("columns", ["_value"])), bool(args.get("desc", False)))
        elif name == "yield":
            pass
        else:
            raise ApiError(400, "invalid", f"stand-in does not implement Flux function {name!r}")
    # One table per series (group key: _start, _stop, _measurement, _field and the tags).
    tables: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        tag_items = tuple(sorted((k, v) for k, v in r.items() if not k.startswith("_")))
        tables.setdefault((r["_measurement"], r["_field"], tag_items), []).append(r)
    out_tables = []
    for key in sorted(tables):
        table = sorted(tables[key], key=lambda r: r["_time"])
        if sort_spec:
            cols, desc = sort_spec
            table = sorted(table, key=lambda r: tuple(r.get(c) for c in cols), reverse=desc)
        if limit:
            n, offset = limit
            table = table[offset : offset + n]
        if table:
            out_tables.append((key, table))
    return _annotated_csv(out_tables, start_ns, stop_ns)


def _annotated_csv(tables: list[tuple[tuple, list[dict[str, Any]]]], start_ns: int, stop_ns: int) -> str:
    lines: list[str] = []
    previous_schema = None
    for index, ((measurement, field_name, tag_items), rows) in enumerate(tables):
        tag_keys = [k for k, _ in tag_items]
        value_type = FLUX_TYPES[rows[0]["_type"]]
        schema = (tuple(tag_keys), value_type)
        if schema != previous_schema:
            if previous_schema is not None:
                lines.append("")
            columns = ["result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement", *tag_keys]
            types = ["string", "long", "dateTime:RFC3339", "dateTime:RFC3339", "dateTime:RFC3339", value_type, "string", "string"]
            types += ["string"] * len(tag_keys)
            groups = ["false", "false", "true", "true", "false", "false", "true", "true"] + ["true"] * len(tag_keys)
            lines.append("#datatype," + ",".join(types))
            lines.append("#group," + ",".join(groups))
            lines.append("#default,_result" + "," * (len(columns) - 1))
            lines.append("," + ",".join(columns))
            previous_schema = schema
        for r in rows:
            value = r["_value"]
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, float):
                text = repr(value) if value != int(value) or abs(value) >= 1e16 else str(int(value))
            else:
                text = str(value)
            cells = ["", "", str(index), _rfc3339(start_ns), _rfc3339(stop_ns), _rfc3339(r["_time"]), _csv_cell(text),
                     _csv_cell(field_name), _csv_cell(measurement), *(_csv_cell(v) for _, v in tag_items)]
            lines.append(",".join(cells))
    if not lines:
        return "\r\n"
    return "\r\n".join(lines) + "\r\n\r\n"


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


# ---------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    store: Store
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Influxdb-Build", "OSS")
        self.send_header("X-Influxdb-Version", VERSION)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: ApiError) -> None:
        body = json.dumps({"code": err.code, "message": err.message}).encode()
        self._send(err.status, body, "application/json; charset=utf-8", {"X-Platform-Error-Code": err.code})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def _authorize(self) -> None:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme not in ("Token", "Bearer") or token != self.store.token:
            raise ApiError(401, "unauthorized", "unauthorized access")

    def _org(self, params: dict[str, list[str]]) -> None:
        org = (params.get("org") or [None])[0]
        org_id = (params.get("orgID") or [None])[0]
        if org is None and org_id is None:
            raise ApiError(400, "invalid", "Please provide either orgID or org")
        if org is not None and org != self.store.org:
            raise ApiError(404, "not found", f'organization name "{org}" not found')

    def do_HEAD(self) -> None:
        if urlparse(self.path).path == "/ping":
            self._send(204)
        else:
            self._send(404)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/ping":
            self._send(204)
        elif path == "/health":
            body = {"name": "influxdb", "message": "ready for queries and writes", "status": "pass", "checks": [],
                    "version": VERSION, "commit": "stand-in"}
            self._send(200, json.dumps(body).encode(), "application/json; charset=utf-8")
        else:
            self._error(ApiError(404, "not found", "path not found"))

    def do_POST(self) -> None:
        url = urlparse(self.path)
        params = parse_qs(url.query)
        try:
            body = self._body()
            self._authorize()
            if url.path == "/api/v2/write":
                self._write(params, body)
            elif url.path == "/api/v2/query":
                self._query(params, body)
            else:
                raise ApiError(404, "not found", "path not found")
        except ApiError as err:
            self._error(err)

    def _write(self, params: dict[str, list[str]], body: bytes) -> None:
        self._org(params)
        bucket = (params.get("bucket") or [None])[0]
        if not bucket:
            raise ApiError(400, "invalid", "bucket is required")
        if bucket not in self.store.buckets:
            raise ApiError(404, "not found", f'bucket "{bucket}" not found')
        precision = (params.get("precision") or ["ns"])[0]
        if precision not in PRECISION_NS:
            raise ApiError(400, "invalid", f'invalid precision "{precision}"')
        now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
        try:
            points = parse_line_protocol(body.decode("utf-8"), precision, now_ns)
        except ValueError as err:
            raise ApiError(400, "invalid", str(err)) from None
        with self.store.lock:
            # A field keeps its first type; a conflicting write is rejected as a whole, like InfluxDB's shard.
            for p, types in points:
                for name, kind in types.items():
                    known = self.store.field_types.get((bucket, p.measurement, name))
                    if known is not None and known != kind:
                        raise ApiError(
                            422, "unprocessable entity",
                            f'failure writing points to database: partial write: field type conflict: input field "{name}" '
                            f'on measurement "{p.measurement}" is type {kind}, already exists as type {known} dropped={len(points)}',
                        )
            for p, types in points:
                for name, kind in types.items():
                    self.store.field_types[(bucket, p.measurement, name)] = kind
                for name, value in p.fields:
                    self.store.buckets[bucket][(p.measurement, p.tags, name, p.time_ns)] = value
            self.store.requests.append(("/api/v2/write", body.decode("utf-8")))
        self._send(204)

    def _query(self, params: dict[str, list[str]], body: bytes) -> None:
        self._org(params)
        ctype = self.headers.get("Content-Type", "")
        if "application/json" in ctype:
            doc = json.loads(body or b"{}")
            query = doc.get("query")
            extern = doc.get("extern") or {}
            if extern.get("body"):  # the client sends an empty File when there are no parameters
                raise ApiError(400, "invalid", "stand-in does not evaluate extern (query parameters)")
        else:
            query = body.decode("utf-8")
        if not query:
            raise ApiError(400, "invalid", "query is required")
        with self.store.lock:
            self.store.requests.append(("/api/v2/query", query))
        csv_text = run_flux(self.store, query, datetime.now(timezone.utc))
        self._send(200, csv_text.encode(), "text/csv; charset=utf-8")


class InfluxStandIn:
    """Run with ``with InfluxStandIn(token=..., org=..., buckets=[...]) as influx: influx.url``."""

    def __init__(self, *, token: str = "test-token", org: str = "wattflow", buckets: list[str] | None = None) -> None:
        self.store = Store(token=token, org=org, buckets={b: {} for b in (buckets or ["sensors", "forecasts"])})
        handler = type("Handler", (_Handler,), {"store": self.store})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def queries(self) -> list[str]:
        return [body for path, body in self.store.requests if path == "/api/v2/query"]

    def __enter__(self) -> "InfluxStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
