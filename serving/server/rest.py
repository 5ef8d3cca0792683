"""REST front end on the same process: TF Serving's `/v1/models/...` routes, JSON bodies and HTTP codes.

Routes and messages follow tensorflow_serving/model_servers/http_rest_api_handler.cc and json_tensor.cc:
row format (`instances` -> `predictions`) and columnar format (`inputs` -> `outputs`).
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.server.config import MonitoringConfig
from serving.server.core import ServingCore
from serving.server.errors import ServingError, invalid_argument, not_found
from serving.server.tensors import json_to_ndarray
from wattflow.log import get_logger

log = get_logger(__name__)

_MODEL = r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_GET = re.compile(rf"(?i){_MODEL}(?:/(metadata))?")
_POST = re.compile(rf"(?i){_MODEL}:(classify|regress|predict)")


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = int(version)
    if label:
        spec.version_label = label
    return spec


def _to_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestApi:
    """Turns a method, path and body into (HTTP status, JSON text); independent of the HTTP server."""

    def __init__(self, core: ServingCore, monitoring: MonitoringConfig, *, max_json_depth: int = 64) -> None:
        self.core = core
        self.monitoring = monitoring
        self.max_json_depth = max_json_depth

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        """Never raises: every outcome is an HTTP status with TF Serving's `{"error": ...}` body or the result."""
        try:
            return self._handle(method, path, body)
        except Exception as exc:  # a bug must cost one request a 500, never the connection or the worker
            log.exception("REST request failed", method=method, path=path[:200])
            return 500, "application/json", json.dumps({"error": f"Internal error: {type(exc).__name__}: {exc}"})

    def _handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        path = path.split("?", 1)[0]
        if method == "GET" and self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path:
            return 200, "text/plain; version=0.0.4", self.core.metrics.render()
        started = time.perf_counter()
        model_name, api = "", "unknown"
        try:
            if method == "GET" and (match := _GET.fullmatch(path)):
                model_name, version, label, metadata = match.groups()
                api = "get_model_metadata" if metadata else "get_model_status"
                spec = _model_spec(model_name, version, label)
                result = self._metadata(spec) if metadata else self._status(spec)
            elif method == "POST" and (match := _POST.fullmatch(path)):
                model_name, version, label, verb = match.groups()
                api = verb.lower()
                result = self._post(api, _model_spec(model_name, version, label), body)
            else:
                raise not_found(f"Malformed request: {method} {path}")
        except ServingError as exc:
            self.core.metrics.request_count.inc(model_name, exc.code.name)
            return exc.http_status, "application/json", json.dumps({"error": exc.message})
        self.core.metrics.request_count.inc(model_name, "OK")
        self.core.metrics.request_latency.observe(model_name, api, "REST", value=(time.perf_counter() - started) * 1e6)
        return 200, "application/json", result

    def _status(self, spec) -> str:
        response = self.core.get_model_status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json.dumps(_to_json(response), indent=1)

    def _metadata(self, spec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return json.dumps(
            {
                "model_spec": {"name": spec.name, "signature_name": "", "version": str(response.model_spec.version.value)},
                "metadata": {"signature_def": _to_json(signature_map)},
            },
            indent=1,
        )

    def _post(self, api: str, spec, body: bytes) -> str:
        # Fewer brackets than the limit cannot nest deeper than it: most bodies skip the scan.
        if body.count(b"[") + body.count(b"{") > self.max_json_depth and (
            (depth := json_nesting_depth(body)) > self.max_json_depth
        ):
            raise invalid_argument(
                f"JSON Parse error: nesting depth {depth} exceeds the limit of {self.max_json_depth}"
            )
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise invalid_argument(f"JSON Parse error: {exc}") from None
        if not isinstance(payload, dict):
            raise invalid_argument("JSON Value: request body is not a JSON object")
        signature_name = payload.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' key must be a string value.")
        spec.signature_name = signature_name
        if api == "classify":
            self.core.check_classify(spec)
        if api == "regress":
            self.core.check_regress(spec)
        return self._predict(spec, payload)

    def _predict(self, spec, payload: dict) -> str:
        servable = self.core.resolve(spec)
        signature = servable.signature(spec.signature_name)
        has_rows, has_columns = "instances" in payload, "inputs" in payload
        if has_rows == has_columns:
            raise invalid_argument(
                "Missing 'inputs' or 'instances' key" if not has_rows
                else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
            )
        if has_rows:
            inputs = _rows_to_inputs(payload["instances"], signature)
        else:
            inputs = _columns_to_inputs(payload["inputs"], signature)
        signature, wanted, outputs = self.core.run_signature(servable, spec.signature_name, inputs, [])
        if has_rows:
            batch = {outputs[name].shape[0] if outputs[name].ndim else None for name in wanted}
            if len(batch) != 1 or None in batch:
                raise invalid_argument("Tensor batch sizes of outputs differ; use the columnar 'inputs' format")
            if len(wanted) == 1:
                predictions = outputs[wanted[0]].tolist()
            else:
                lists = {name: outputs[name].tolist() for name in wanted}
                predictions = [{name: lists[name][i] for name in wanted} for i in range(batch.pop())]
            return json.dumps({"predictions": predictions})
        if len(wanted) == 1:
            return json.dumps({"outputs": outputs[wanted[0]].tolist()})
        return json.dumps({"outputs": {name: outputs[name].tolist() for name in wanted}})


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)  # a string literal (or an unterminated one)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_nesting_depth(body: bytes) -> int:
    """The deepest `[`/`{` nesting of a JSON text, brackets inside strings not counted. Cheap enough to run
    before the parser on every body (~2 ms for a 1.3 MB batch-32 body): strings are cut out with one regex,
    everything but brackets dropped with `bytes.translate`, and the running depth taken in numpy. Invalid JSON
    still gets a number (the parser then rejects it)."""
    if b"[" not in body and b"{" not in body:
        return 0
    if b'"' in body:
        body = _JSON_STRING.sub(b"", body)
    brackets = body.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    data = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((data == 0x5B) | (data == 0x7B), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _rows_to_inputs(instances, signature) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty JSON list")
    names = signature.input_names
    if all(isinstance(row, dict) for row in instances):
        columns: dict[str, list] = {name: [] for name in names}
        for index, row in enumerate(instances):
            if set(row) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {json.dumps(sorted(row))} "
                    f"keys do not match the signature inputs {{{','.join(names)}}}"
                )
            for name in names:
                columns[name].append(row[name])
    elif len(names) == 1:
        columns = {names[0]: instances}
    else:
        raise invalid_argument(
            f"Failed to process element: 0 of 'instances' list. JSON object is not an object with the "
            f"{len(names)} named inputs {{{','.join(names)}}}"
        )
    return {name: json_to_ndarray(values, signature.inputs[name].dtype, name) for name, values in columns.items()}


def _columns_to_inputs(columns, signature) -> dict[str, np.ndarray]:
    names = signature.input_names
    if not isinstance(columns, dict) or (len(names) == 1 and names[0] not in columns):
        if len(names) == 1:
            columns = {names[0]: columns}
        else:
            raise invalid_argument(f"'inputs' must be a JSON object with the inputs {{{','.join(names)}}}")
    return {str(name): json_to_ndarray(value, _dtype(signature, name), name) for name, value in columns.items()}


def _dtype(signature, name):
    spec = signature.inputs.get(name)
    return spec.dtype if spec else np.float32


class RequestRefused(Exception):
    """A request the HTTP layer answers itself (bad framing, too large): HTTP status and TF Serving's error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_body(headers, rfile, max_body: int) -> bytes:
    """The request body, framed by Content-Length or chunked transfer coding, never more than `max_body` bytes.

    Invalid or negative lengths are refused before anything is read (a negative length used to mean "read to the
    end of the stream", past every limit).
    """
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(rfile, max_body)
    values = headers.get_all("Content-Length") or []
    if not values:
        return b""
    if len(set(v.strip() for v in values)) != 1:
        raise RequestRefused(400, f"Invalid Content-Length header: conflicting values {values}")
    text = values[0].strip()
    if not text.isdigit() or not text.isascii():
        raise RequestRefused(400, f"Invalid Content-Length header: {text[:40]!r} is not a non-negative integer")
    length = int(text)
    if length > max_body:
        raise RequestRefused(413, f"Request body of {length} bytes exceeds the limit of {max_body} bytes "
                                  "(--max_request_bytes)")
    body = rfile.read(length) if length else b""
    if len(body) != length:
        raise RequestRefused(400, f"Request body ended after {len(body)} of {length} bytes (Content-Length)")
    return body


def _read_chunked(rfile, max_body: int) -> bytes:
    parts, total = [], 0
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise RequestRefused(400, f"Invalid chunk size line {line[:40]!r} in a chunked request body") from None
        if size < 0:
            raise RequestRefused(400, "Invalid negative chunk size in a chunked request body")
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > max_body:
            raise RequestRefused(413, f"Request body exceeds the limit of {max_body} bytes (--max_request_bytes)")
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise RequestRefused(400, "Chunked request body ended inside a chunk")
        parts.append(chunk)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    # Request line and headers: http.server's own limits (65536-byte lines, 100 headers) answer 414/431.
    api: RestApi
    max_body: int

    def _serve(self, method: str) -> None:
        try:
            body = read_body(self.headers, self.rfile, self.max_body)
        except RequestRefused as exc:
            # The body was not (fully) read: the connection cannot carry another request.
            self.close_connection = True
            status, ctype, text = exc.status, "application/json", json.dumps({"error": exc.message})
        else:
            status, ctype, text = self.api.handle(method, self.path, body)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, too many headers) in TF Serving's JSON shape."""
        self.close_connection = True
        data = json.dumps({"error": message or self.responses.get(code, ("",))[0]}).encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # per-request access logs would dominate the hot path
        return


class _Connection:
    def __init__(self, sock: socket.socket, address, handler: _Handler) -> None:
        self.sock = sock
        self.address = address
        self.handler = handler
        self.idle_since = time.monotonic()
        self.handshaken = False


class RestServer:
    """HTTP/1.1 with keep-alive on a fixed pool of `num_threads` workers (TF Serving's `--rest_api_num_threads`).

    Idle keep-alive connections wait in one selector thread and cost no worker; a connection goes to a worker only
    when a request arrives, and back to the selector after the response. Connections idle longer than the
    timeout are closed. With an `ssl_context` every connection is TLS (handshake done by a worker, bounded by the
    same timeout); a client that does not speak TLS, or lacks a certificate when one is required, is dropped.
    """

    def __init__(self, api: RestApi, *, host: str, port: int, max_body: int, timeout_s: float,
                 num_threads: int = 16, ssl_context: ssl.SSLContext | None = None,
                 max_connections: int = 4096) -> None:
        self._handler_class = type("Handler", (_Handler,), {"api": api, "max_body": max_body, "timeout": timeout_s})
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._listener = socket.create_server((host, port), backlog=256)
        self.port = self._listener.getsockname()[1]
        self.num_threads = num_threads
        self.thread_name_prefix = f"rest-{self.port}"
        self._pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix=self.thread_name_prefix)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._returned: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="rest-selector", daemon=True)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for connection in list(self._open):
                self._close(connection)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- selector thread ----------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _loop(self) -> None:
        next_sweep = time.monotonic() + 1.0
        while not self._stopping:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                else:
                    self._selector.unregister(key.fileobj)
                    self._pool.submit(self._work, key.data)
            while self._returned:
                connection = self._returned.popleft()
                connection.idle_since = time.monotonic()
                try:
                    self._selector.register(connection.sock, selectors.EVENT_READ, connection)
                except (ValueError, OSError):  # closed meanwhile
                    self._discard(connection)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + 1.0
                self._close_idle()
        self._selector.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with self._lock:
                full = len(self._open) >= self._max_connections
            if full:  # descriptors are finite: the newest connection is the one turned away
                sock.close()
                continue
            sock.setblocking(True)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            handler = self._handler_class.__new__(self._handler_class)
            handler.request, handler.client_address, handler.server = sock, address, self
            connection = _Connection(sock, address, handler)
            with self._lock:
                self._open.add(connection)
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _close_idle(self) -> None:
        now = time.monotonic()
        for key in list(self._selector.get_map().values()):
            connection = key.data
            if isinstance(connection, _Connection) and now - connection.idle_since > self._timeout_s:
                self._selector.unregister(connection.sock)
                self._discard(connection)

    # ---- workers ------------------------------------------------------------------------------------
    def _work(self, connection: _Connection) -> None:
        handler = connection.handler
        try:
            if not connection.handshaken:
                if self._ssl_context is not None:
                    connection.sock.settimeout(self._timeout_s)
                    connection.sock.do_handshake()
                handler.setup()  # socket timeout, TCP_NODELAY, rfile/wfile
                connection.handshaken = True
            while True:
                handler.close_connection = True
                handler.handle_one_request()
                if handler.close_connection:
                    self._discard(connection)
                    return
                if not self._pending(connection):
                    break
        except Exception:  # a client that breaks the protocol or the TLS handshake loses only its connection
            self._discard(connection)
            return
        self._returned.append(connection)
        self._wake()

    @staticmethod
    def _pending(connection: _Connection) -> bool:
        """Whether another request is already buffered (pipelined): the selector would not see it."""
        sock = connection.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        sock.settimeout(0)
        try:
            return bool(connection.handler.rfile.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError, OSError):
            return False
        finally:
            sock.settimeout(connection.handler.timeout)

    def _discard(self, connection: _Connection) -> None:
        with self._lock:
            self._open.discard(connection)
        self._close(connection)

    @staticmethod
    def _close(connection: _Connection) -> None:
        handler = connection.handler
        try:
            if getattr(handler, "wfile", None) is not None:
                handler.finish()
        except Exception:
            pass
        try:
            connection.sock.close()
        except OSError:
            pass


def server_ssl_context(ssl_config) -> ssl.SSLContext:
    """The REST port's TLS: the same key, certificate, CA and client verification as gRPC."""
    import os
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: the PEM texts go through a private temporary file, removed at once.
    with tempfile.TemporaryDirectory(prefix="wattflow-tls-") as directory:
        os.chmod(directory, 0o700)
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert.write_text(ssl_config.server_cert)
        key.write_text(ssl_config.server_key)
        context.load_cert_chain(str(cert), str(key))
    if ssl_config.custom_ca:
        context.load_verify_locations(cadata=ssl_config.custom_ca)
    context.verify_mode = ssl.CERT_REQUIRED if ssl_config.client_verify else ssl.CERT_NONE
    return context
