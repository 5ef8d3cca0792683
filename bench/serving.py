"""Serving benchmark: in-process SavedModel call vs gRPC Predict vs REST predict, then 32 concurrent clients.

    .venv/bin/python bench/serving.py [--json PATH] [--seconds 12] [--rounds 3] [--iterations 200] [--block 10]

The model is the default forecaster (lookback 168 h, horizon 24 h, LSTM 64 units) from ml.model's builder
(untrained weights: latency does not depend on them), exported with ml.model.export_saved_model, served by
`wattflow-model-server` subprocesses: plain and XLA-compiled (serving.xla.write_xla_saved_model, the server
started with --xla_cpu_compilation_enabled and batches padded to allowed sizes), each without and with
batching. Requests are built once and reused, so the figures are the serving path, not the client's protobuf
building. Targets (issue 21, 2 shared cores): in-process b1 p50 <= 1 ms with XLA; gRPC b1 p50 <= in-process
b1 p50 + the floor's b1 p50 + 0.5 ms; 32 concurrent batch-1 clients >= 60% of the floor's request rate, 0 errors.

What is compared with what:
- "inprocess" is the model call in this process, numpy arrays in and out, made the way the servers make it
  (serving.server.servable.Signature: the SavedModel imported into a TF1 Session, as TF Serving runs it, one
  Session callable per signature); the servers run the same SavedModel the same way, so gRPC minus it is the
  serving overhead alone (transport, request and response handling). "inprocess_keyword" is TF2's eager
  loading and `signature(history=..., future=...)` call of the same export, for reference. All use the same
  TensorFlow threads (`--tf-intra-op-threads`, `--tf-inter-op-threads`, passed to the servers as TF Serving's
  `--tensorflow_*_op_parallelism`): one thread each, the fastest setting in-process too for this sequential
  LSTM on 2 cores, so the reference is not handicapped. Calls of up to Signature.INLINE_MAX_ROWS rows, and
  every call of an XLA-compiled signature, run in the calling thread (RunOptions.inter_op_thread_pool -1).
- b1/b32 latencies are timed in blocks of `--block` consecutive calls of one path, the paths taking turns
  block by block, so load from other jobs falls on every path alike. Blocks, not single calls: a call timed
  right after a call that waited on another process (gRPC, REST) or handed its work to TensorFlow's pool
  threads starts on an idle, cold core, which no caller calling the model repeatedly sees. Timed that way the
  in-process XLA call at batch 1 was ~0.4 ms slower (1.21 ms in the bench, 0.74-0.80 alone); the bench still
  measures it so ("inprocess_xla right after a gRPC call"), to show the difference in the same run.
- "grpc_xla_no_inline" (skip with --no-ab) is the A/B for the unbatched server's inline call: a second XLA
  server, same code, whose model calls always go to its executor thread (serving.inline_call_max_ms = -1). Batch-1 latencies only; "grpc_xla" is the server as shipped.
- The 32 clients are coroutines on one grpc.aio channel in this process, each sending its next batch-1 Predict
  when its last one returns; one asyncio process is the cheapest Python client per request (thread or future
  clients cost more CPU on the same 2 cores). Throughput phases alternate with in-process batch-32 phases, and
  the target compares against the in-process figure from those phases. The client and server CPU time per
  request and the server's mean batch size are reported alongside, to show where the time goes.
- "grpc_floor" is the same client against a bare grpcio server (same thread pool) whose Predict returns a
  canned copy of the model server's response without running anything: the latency and request rate the
  Python gRPC stack alone allows on this machine, i.e. the best any Python model server could reach here.
  The model server itself runs on grpc.aio (one event loop, no thread handed each call), so the same
  canned response from a bare grpc.aio server ("grpc_floor_aio") is reported beside it; the targets use the
  thread-pool floor, as issue 21 defines it (measured here it was the faster of the two more often than not,
  so it is also the stricter reference). The 32-client phases run in rounds (every server, then both floors,
  back to back); rates are medians over rounds and the ratio is also given per round (same load), median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wattflow.ports import free_port  # noqa: E402  (after the repository is on the path)


def export_model(path: Path):
    """The ML engineer's default LSTM when importable, else the serving contract model of the same size."""
    from ml.spec import WindowSpec
    from wattflow.settings import get_settings

    model_settings = get_settings().model
    spec = WindowSpec(lookback_h=model_settings.lookback_h, horizon_h=model_settings.horizon_h,
                      quantiles=tuple(model_settings.quantiles))
    try:
        from ml.model import ModelParams, build_forecaster, export_saved_model
        from ml.synthetic import synthetic_gold_features
        from ml.windows import make_windows

        windows = make_windows(synthetic_gold_features(("b01",), days=30), spec)
        forecaster = build_forecaster(spec, ModelParams.from_settings(model_settings), windows)
        export_saved_model(forecaster, path)
        return spec, "ml.model.build_forecaster (encoder-decoder LSTM)"
    except ImportError:
        from serving.contract_model import export_contract_model

        export_contract_model(path, spec, units=model_settings.units)
        return spec, "serving.contract_model (LSTM encoder)"


def inputs(spec, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, spec.lookback_h, len(spec.history_features))).astype(np.float32),
            rng.normal(size=(batch, spec.horizon_h, len(spec.future_features))).astype(np.float32))


def summarize(latencies_s: list[float], batch: int) -> dict:
    array = np.asarray(latencies_s) * 1000
    return {"p50_ms": float(np.median(array)), "p99_ms": float(np.percentile(array, 99)),
            "windows_per_s": batch * len(array) / (array.sum() / 1000)}


def interleaved(calls: dict, iterations: int, block: int = 1, warmup: int = 5) -> dict[str, list[float]]:
    """`iterations` timed calls per path, `block` consecutive calls of a path at a time, the paths taking turns.

    A call that returns a float timed itself (the seconds it returns are recorded instead of its own duration).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    out: dict[str, list[float]] = {name: [] for name in calls}
    block = max(1, block)
    for _ in range(-(-iterations // block)):
        for name, call in calls.items():
            for _ in range(block):
                started = time.perf_counter()
                result = call()
                elapsed = time.perf_counter() - started
                out[name].append(result if isinstance(result, float) else elapsed)
    return out


def inprocess_throughput(call, batch: int, seconds: float) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    while time.perf_counter() - started < seconds:
        call()
        count += batch
    return count, time.perf_counter() - started


# The A/B variant of the server: unbatched model calls always go to the executor thread (no inline call in the
# event loop when idle: serving.inline_call_max_ms = -1), everything else the same code.
NO_INLINE_SERVER = ("import os, sys; os.environ['WATTFLOW_SERVING__INLINE_CALL_MAX_MS'] = '-1'; "
                    "from serving.server.main import main; main(sys.argv[1:])")


def start_server(base: Path, model: str, batching_file: Path | None, extra_flags: list[str], label: str = "",
                 no_inline: bool = False):
    grpc_port, rest_port = free_port(), free_port()
    program = [sys.executable, "-c", NO_INLINE_SERVER] if no_inline else [str(REPO / ".venv/bin/wattflow-model-server")]
    argv = [*program, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={model}", f"--model_base_path={base / model}", "--host=127.0.0.1", *extra_flags]
    if batching_file:
        argv += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
    log = open(base.parent / f"server-{label or ('batching' if batching_file else 'plain')}.log", "w")
    # This checkout's code, whichever checkout the virtual environment's editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"


def wait_ready(rest_url: str, model: str, process, timeout_s: float = 600) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(f"{rest_url}/v1/models/{model}", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready")


def predict_request(model: str, history, future):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history))
    request.inputs["future"].CopyFrom(tf.make_tensor_proto(future))
    return request


async def concurrent_clients(target: str, request, clients: int, seconds: float) -> tuple[int, int, float, float]:
    """`clients` concurrent callers, each sending its next batch-1 Predict when the last one returns.

    Returns (ok, errors, elapsed seconds, this process's CPU seconds while the clients ran).
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    ok = errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            await stub.Predict(request, timeout=60)
        stop_at = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal ok, errors
            while time.perf_counter() < stop_at:
                try:
                    await stub.Predict(request, timeout=60)
                    ok += 1
                except grpc.RpcError:
                    errors += 1

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return ok, errors, elapsed, cpu


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mean_batch_size(rest_url: str) -> float | None:
    """The batching server's mean processed batch size, from its Prometheus metrics (warmup included)."""
    import requests

    total = count = 0.0
    for line in requests.get(f"{rest_url}/monitoring/prometheus/metrics", timeout=10).text.splitlines():
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count"):
            count = float(line.split()[-1])
    return total / count if count else None


def serve_canned_predict(port: int, response_file: Path, aio: bool = False) -> None:
    """The gRPC floor: a grpcio server like the model server's whose Predict returns fixed response bytes."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    response = predict_pb2.PredictResponse.FromString(response_file.read_bytes())
    if aio:
        class CannedAio(prediction_service_pb2_grpc.PredictionServiceServicer):
            async def Predict(self, request, context):  # noqa: N802 (gRPC's naming)
                return response

        async def run() -> None:
            server = grpc.aio.server()
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(CannedAio(), server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await server.wait_for_termination()

        asyncio.run(run())
        return

    class Canned(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC's naming)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(64, 8 * (os.cpu_count() or 2))))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Canned(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def start_canned_server(response_file: Path, aio: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--canned-server-port", str(port),
                                "--canned-response", str(response_file), *(["--canned-aio"] if aio else [])])
    return process, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--iterations", type=int, default=200, help="timed calls per batch-1 measurement")
    parser.add_argument("--iterations-b32", type=int, default=60)
    parser.add_argument("--block", type=int, default=10,
                        help="consecutive calls of one path per turn when timing b1/b32 latencies (1: call by call)")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="duration of each 32-client measurement, split over --rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="32-client rounds: each runs every server and both floors back to back; the rates "
                             "quoted are medians over rounds, and each round's ratio to the floor is taken within it")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    # 32 closed-loop batch-1 clients: with 2 ms the batches closed at ~10 windows (the clients' next requests,
    # slowed by the shared CPU, arrive spread over more than 2 ms) and each window paid a third of a batch-32 call;
    # 6 ms lets a batch gather nearly every client (mean ~27), which is also lower latency at 32 clients
    # (32 / rate). Measured with both values in the report of issue 21.
    parser.add_argument("--batch-timeout-micros", type=int, default=6000)
    # One batch thread on 2 cores: the model runs on one core while the gRPC threads use the other; a second
    # batch thread would start half-full batches while the first runs.
    parser.add_argument("--num-batch-threads", type=int, default=1)
    parser.add_argument("--tf-intra-op-threads", type=int, default=1,
                        help="TensorFlow intra-op threads, in-process and in the servers (0: TensorFlow's choice)")
    parser.add_argument("--tf-inter-op-threads", type=int, default=1,
                        help="TensorFlow inter-op threads, in-process and in the servers (0: TensorFlow's choice; "
                             "negative: every op in the calling thread)")
    parser.add_argument("--no-ab", action="store_true",
                        help="skip the A/B server (unbatched XLA with every model call on the executor thread)")
    parser.add_argument("--canned-server-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--canned-response", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--canned-aio", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.canned_server_port:
        serve_canned_predict(args.canned_server_port, args.canned_response, aio=args.canned_aio)
        return

    import grpc
    import requests
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.xla import write_xla_saved_model

    # Before anything runs a TensorFlow op: the in-process reference gets the servers' thread pools.
    from serving.server.main import configure_tensorflow_threads

    configure_tensorflow_threads(args.tf_intra_op_threads, args.tf_inter_op_threads)
    server_flags = [f"--tensorflow_intra_op_parallelism={args.tf_intra_op_threads}",
                    f"--tensorflow_inter_op_parallelism={args.tf_inter_op_threads}"]

    work = Path(tempfile.mkdtemp(prefix="wattflow-bench-serving-"))
    model = "bench_lstm"
    base, base_xla = work / "models", work / "models-xla"
    spec, model_source = export_model(base / model / "1")
    write_xla_saved_model(base / model / "1", base_xla / model / "1")
    allowed = sorted({size for size in (1, 2, 4, 8, 16) if size < args.max_batch_size} | {args.max_batch_size})
    batching_text = (
        f"max_batch_size {{ value: {args.max_batch_size} }}\nbatch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
        f"num_batch_threads {{ value: {args.num_batch_threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n"
    )
    batching_file, batching_xla_file = work / "batching.config", work / "batching-xla.config"
    batching_file.write_text(batching_text)
    # XLA compiles per shape: pad to a few sizes, each compiled by warmup before the version is AVAILABLE.
    batching_xla_file.write_text(batching_text + f"allowed_batch_sizes: [{', '.join(map(str, allowed))}]\n")
    monitoring_file = work / "monitoring.config"
    monitoring_file.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    xla_flags = [*server_flags, "--xla_cpu_compilation_enabled=true"]
    monitored = [f"--monitoring_config_file={monitoring_file}"]
    servers = {
        "plain": start_server(base, model, None, server_flags, "plain"),
        "batched": start_server(base, model, batching_file, [*server_flags, *monitored], "batched"),
        "xla": start_server(base_xla, model, None, xla_flags, "xla"),
        "batched_xla": start_server(base_xla, model, batching_xla_file, [*xla_flags, *monitored], "batched-xla"),
    }
    if not args.no_ab:
        servers["xla_no_inline"] = start_server(base_xla, model, None, xla_flags, "xla-no-inline", no_inline=True)
    results: dict = {"model": model_source, "cpus": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0],
                     "tf_threads": {"intra_op": args.tf_intra_op_threads, "inter_op": args.tf_inter_op_threads},
                     "batching": {"max_batch_size": args.max_batch_size,
                                  "batch_timeout_micros": args.batch_timeout_micros,
                                  "num_batch_threads": args.num_batch_threads,
                                  "allowed_batch_sizes_xla": allowed}}
    floors: dict[str, tuple] = {}
    try:
        # Servers start (import TensorFlow, load, warm up) before anything is timed, so nothing competes.
        for process, _target, rest in servers.values():
            wait_ready(rest, model, process)
        signature = tf.saved_model.load(str(base / model / "1")).signatures["serving_default"]
        signature_xla = tf.saved_model.load(str(base_xla / model / "1")).signatures["serving_default"]
        h1, f1 = inputs(spec, 1)
        h32, f32 = inputs(spec, 32, seed=1)
        stubs = {name: prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
                 for name, (_, target, _) in servers.items()}
        r1, r32 = predict_request(model, h1, f1), predict_request(model, h32, f32)
        response_file = work / "canned_response.pb"
        response_file.write_bytes(stubs["plain"].Predict(r1, timeout=60).SerializeToString())
        floors = {"floor": start_canned_server(response_file), "floor_aio": start_canned_server(response_file, aio=True)}
        floor_stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(floors["floor"][1]))
        floor_stub.Predict(r1, timeout=120, wait_for_ready=True)
        prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(floors["floor_aio"][1])).Predict(
            r1, timeout=120, wait_for_ready=True)
        session = requests.Session()
        url = f"{servers['plain'][2]}/v1/models/{model}:predict"
        body1 = json.dumps({"inputs": {"history": h1.tolist(), "future": f1.tolist()}})
        body32 = json.dumps({"inputs": {"history": h32.tolist(), "future": f32.tolist()}})

        def rest_call(body: str) -> None:
            response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            response.raise_for_status()

        # The paths are timed interleaved, call by call, so a busy shared machine slows them alike.
        from serving.server.servable import Servable

        server_call = Servable.load(model, 1, base / model / "1").signature("")
        server_call_xla = Servable.load(model, 1, base_xla / model / "1", xla_enabled=True).signature("")
        x1, x32 = {"history": h1, "future": f1}, {"history": h32, "future": f32}

        def xla_after_grpc() -> float:
            """The in-process XLA call timed right after a gRPC call (the order of a call-by-call interleave)."""
            stubs["plain"].Predict(r1, timeout=60)
            started = time.perf_counter()
            server_call_xla(x1)
            return time.perf_counter() - started

        paths = {
            "inprocess": (lambda: server_call(x1), lambda: server_call(x32)),
            "inprocess_xla": (lambda: server_call_xla(x1), lambda: server_call_xla(x32)),
            "inprocess_keyword": (lambda: signature(history=h1, future=f1), lambda: signature(history=h32, future=f32)),
            "inprocess_keyword_xla": (lambda: signature_xla(history=h1, future=f1),
                                      lambda: signature_xla(history=h32, future=f32)),
            "grpc": (lambda: stubs["plain"].Predict(r1, timeout=60), lambda: stubs["plain"].Predict(r32, timeout=60)),
            "grpc_xla": (lambda: stubs["xla"].Predict(r1, timeout=60), lambda: stubs["xla"].Predict(r32, timeout=60)),
            "rest": (lambda: rest_call(body1), lambda: rest_call(body32)),
        }
        if "xla_no_inline" in stubs:
            paths["grpc_xla_no_inline"] = (lambda: stubs["xla_no_inline"].Predict(r1, timeout=60),
                                           lambda: stubs["xla_no_inline"].Predict(r32, timeout=60))
        b1 = interleaved({**{name: calls[0] for name, calls in paths.items()},
                          "grpc_floor": lambda: floor_stub.Predict(r1, timeout=60),
                          "inprocess_xla_after_grpc": xla_after_grpc}, args.iterations, args.block)
        b32 = interleaved({name: calls[1] for name, calls in paths.items()}, args.iterations_b32, args.block)
        for name in paths:
            results[name] = _row(summarize(b1[name], 1), summarize(b32[name], 32))
        floor_b1 = summarize(b1["grpc_floor"], 1)
        after_grpc = summarize(b1["inprocess_xla_after_grpc"], 1)
        results["inprocess_xla_after_grpc"] = {"b1_p50_ms": after_grpc["p50_ms"], "b1_p99_ms": after_grpc["p99_ms"]}
        # What the server adds on its own: gRPC XLA b1 less the floor and less the model call as a server sees it
        # (right after a wait on the network, not back to back), for the closing notes' decomposition.
        results["grpc_xla_server_overhead_ms"] = (results["grpc_xla"]["b1_p50_ms"] - floor_b1["p50_ms"]
                                                  - after_grpc["p50_ms"])
        results["block"] = args.block

        # Throughput phases alternate (in-process batch 32, then 32 clients against each server), twice each,
        # so load from other jobs falls on all of them.
        phases = {"batching": servers["batched"][:2], "batching_xla": servers["batched_xla"][:2],
                  "no_batching": servers["plain"][:2], "floor": floors["floor"], "floor_aio": floors["floor_aio"]}
        totals = {"inprocess": [0, 0.0], "inprocess_xla": [0, 0.0]}
        totals.update({key: {"ok": 0, "errors": 0, "seconds": 0.0, "client_cpu_s": 0.0, "server_cpu_s": 0.0,
                             "round_rates": []}
                       for key in phases})
        phase_s = args.seconds / args.rounds
        for _round in range(args.rounds):
            for key, call in (("inprocess", lambda: server_call(x32)), ("inprocess_xla", lambda: server_call_xla(x32))):
                count, elapsed = inprocess_throughput(call, 32, phase_s)
                totals[key][0] += count
                totals[key][1] += elapsed
            for key, (process, target) in phases.items():
                server_cpu = process_cpu_s(process.pid)
                ok, errors, elapsed, client_cpu = asyncio.run(concurrent_clients(target, r1, args.clients, phase_s))
                phase = totals[key]
                phase["server_cpu_s"] += process_cpu_s(process.pid) - server_cpu
                phase["ok"] += ok
                phase["errors"] += errors
                phase["seconds"] += elapsed
                phase["round_rates"].append(ok / elapsed)
                phase["client_cpu_s"] += client_cpu
        for key in ("inprocess", "inprocess_xla"):
            results[key]["b32_windows_per_s_during_concurrency"] = totals[key][0] / totals[key][1]

        def rates(key: str) -> dict:
            phase = totals[key]
            return {"requests_per_s": float(np.median(phase["round_rates"])),
                    "round_requests_per_s": [round(rate) for rate in phase["round_rates"]],
                    "errors": phase["errors"],
                    "server_cpu_ms_per_request": 1000 * phase["server_cpu_s"] / max(phase["ok"], 1),
                    "client_cpu_ms_per_request": 1000 * phase["client_cpu_s"] / max(phase["ok"], 1)}

        results["concurrent_32"] = {key: rates(key) for key in ("batching", "batching_xla", "no_batching")}
        results["concurrent_32"]["batching"]["mean_batch_size"] = mean_batch_size(servers["batched"][2])
        results["concurrent_32"]["batching_xla"]["mean_batch_size"] = mean_batch_size(servers["batched_xla"][2])
        results["concurrent_32"]["errors"] = sum(results["concurrent_32"][k]["errors"]
                                                 for k in ("batching", "batching_xla", "no_batching"))
        results["grpc_floor"] = {"b1_p50_ms": floor_b1["p50_ms"], "b1_p99_ms": floor_b1["p99_ms"],
                                 "concurrent_32": rates("floor")}
        results["grpc_floor_aio"] = {"concurrent_32": rates("floor_aio")}
        # Each round's ratio to the floor measured right after it (same load), then the median over rounds.
        for key in ("batching", "batching_xla", "no_batching"):
            for floor in ("floor", "floor_aio"):
                ratios = [ours / theirs for ours, theirs in zip(totals[key]["round_rates"], totals[floor]["round_rates"])]
                results["concurrent_32"][key][f"ratio_to_{floor}_median"] = float(np.median(ratios))
        results["load_avg_1m_at_end"] = os.getloadavg()[0]
    finally:
        for process in [entry[0] for entry in servers.values()] + [entry[0] for entry in floors.values()]:
            process.terminate()
            process.wait(timeout=30)
    floor_rate = results["grpc_floor"]["concurrent_32"]["requests_per_s"]
    targets = {
        "inprocess_xla b1 p50 <= 1 ms": bool(results["inprocess_xla"]["b1_p50_ms"] <= 1.0),
        "grpc b1 p50 <= inprocess b1 p50 + floor b1 p50 + 0.5 ms": bool(
            results["grpc"]["b1_p50_ms"] <= results["inprocess"]["b1_p50_ms"] + floor_b1["p50_ms"] + 0.5),
        "grpc_xla b1 p50 <= inprocess_xla b1 p50 + floor b1 p50 + 0.5 ms": bool(
            results["grpc_xla"]["b1_p50_ms"] <= results["inprocess_xla"]["b1_p50_ms"] + floor_b1["p50_ms"] + 0.5),
        "32 clients, batching + XLA >= 60% of the floor's requests/s": bool(
            results["concurrent_32"]["batching_xla"]["requests_per_s"] >= 0.6 * floor_rate),
        "32 clients, batching (no XLA) >= 60% of the floor's requests/s": bool(
            results["concurrent_32"]["batching"]["requests_per_s"] >= 0.6 * floor_rate),
        "0 errors": bool(results["concurrent_32"]["errors"] == 0),
    }
    results["targets_met"] = targets
    results["rounds"] = args.rounds
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def _row(b1: dict, b32: dict) -> dict:
    return {"b1_p50_ms": b1["p50_ms"], "b1_p99_ms": b1["p99_ms"], "b32_p50_ms": b32["p50_ms"],
            "b32_windows_per_s": b32["windows_per_s"]}


def print_table(results: dict) -> None:
    print(f"model: {results['model']}; cpus: {results['cpus']}; load avg {results['load_avg_1m_at_start']:.1f} -> "
          f"{results.get('load_avg_1m_at_end', float('nan')):.1f}")
    print(f"{'path':<26} {'b1 p50 ms':>10} {'b1 p99 ms':>10} {'b32 p50 ms':>11} {'b32 windows/s':>14}")
    for path in ("inprocess", "inprocess_xla", "inprocess_keyword", "inprocess_keyword_xla", "grpc", "grpc_xla",
                 "grpc_xla_no_inline", "rest"):
        if path not in results:
            continue
        row = results[path]
        print(f"{path:<26} {row['b1_p50_ms']:>10.2f} {row['b1_p99_ms']:>10.2f} {row['b32_p50_ms']:>11.2f} "
              f"{row['b32_windows_per_s']:>14.0f}")
    f = results["grpc_floor"]
    print(f"{'grpc_floor (canned)':<26} {f['b1_p50_ms']:>10.2f} {f['b1_p99_ms']:>10.2f}")
    after = results.get("inprocess_xla_after_grpc")
    if after:
        print(f"latencies timed in blocks of {results.get('block', 1)} calls; inprocess_xla timed instead right after "
              f"a gRPC call: b1 p50 {after['b1_p50_ms']:.2f} ms, p99 {after['b1_p99_ms']:.2f} ms")
        print(f"grpc_xla b1 = floor + that call + {results['grpc_xla_server_overhead_ms']:.2f} ms of the server's own")
    print(f"in-process batch 32 during the concurrency phases: {results['inprocess']['b32_windows_per_s_during_concurrency']:.0f}"
          f" windows/s, XLA {results['inprocess_xla']['b32_windows_per_s_during_concurrency']:.0f} windows/s")
    print(f"\n32 concurrent gRPC clients, batch 1 {'requests/s':>12} {'errors':>7} {'mean batch':>11} "
          f"{'server CPU ms/req':>18} {'client CPU ms/req':>18}")
    c = results["concurrent_32"]
    for label, row in (("batching + XLA", c["batching_xla"]), ("batching", c["batching"]),
                       ("no batching", c["no_batching"]), ("floor (thread-pool grpcio)", f["concurrent_32"]),
                       ("floor (grpc.aio)", results["grpc_floor_aio"]["concurrent_32"])):
        batch = row.get("mean_batch_size")
        print(f"{label:<34} {row['requests_per_s']:>12.0f} {row['errors']:>7} "
              f"{(f'{batch:.1f}' if batch else '-'):>11} {row['server_cpu_ms_per_request']:>18.2f} "
              f"{row['client_cpu_ms_per_request']:>18.2f}")
    floor_rate = f["concurrent_32"]["requests_per_s"]
    print(f"medians over {results.get('rounds', 2)} rounds; rates per round: "
          + "; ".join(f"{label} {row['round_requests_per_s']}" for label, row in
                      (("batching+XLA", c["batching_xla"]), ("batching", c["batching"]),
                       ("floor", f["concurrent_32"]), ("floor aio", results["grpc_floor_aio"]["concurrent_32"]))))
    print(f"batching + XLA = {c['batching_xla']['requests_per_s'] / floor_rate:.0%} of the floor's rate "
          f"(per-round ratio, median: {c['batching_xla']['ratio_to_floor_median']:.0%}; to the grpc.aio floor "
          f"{c['batching_xla']['ratio_to_floor_aio_median']:.0%}); batching = "
          f"{c['batching']['requests_per_s'] / floor_rate:.0%} (per round {c['batching']['ratio_to_floor_median']:.0%})")
    for name, met in results["targets_met"].items():
        print(f"  {'PASS' if met else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
