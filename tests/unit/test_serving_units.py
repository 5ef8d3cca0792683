"""Fast, TensorFlow-free checks of the serving pieces: flags, config files, version policy, batching,
metrics exposition, the seasonal-naive fallback, export's config and atomic install."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pandas as pd
import pytest

from serving.server.errors import ServingError


# ---- flags --------------------------------------------------------------------------------------------
def test_flags_take_tensorflow_model_servers_equals_form():
    from serving.server.flags import parse_flags

    options = parse_flags([
        "--port=9000", "--rest_api_port=9001", "--model_name=energy", "--model_base_path=/models/energy",
        "--enable_batching", "--batching_parameters_file=/b.config", "--file_system_poll_wait_seconds=5",
        "--tensorflow_intra_op_parallelism=2", "--rest_api_timeout_in_ms=1000", "--grpc_max_threads=8",
    ])
    assert (options.port, options.rest_api_port, options.model_name) == (9000, 9001, "energy")
    assert options.enable_batching is True and options.batching_parameters_file == "/b.config"
    assert (options.file_system_poll_wait_seconds, options.grpc_max_threads) == (5, 8)
    assert (options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism) == (2, 0)
    assert parse_flags(["--model_base_path=/m", "--enable_batching=false"]).enable_batching is False
    assert parse_flags(["--model_config_file=/c"]).port == 8500


def test_flags_need_a_model_and_refuse_prefixes():
    from serving.server.flags import parse_flags

    with pytest.raises(SystemExit, match="model_base_path"):
        parse_flags(["--port=8500"])
    with pytest.raises(SystemExit):
        parse_flags(["--model_base_path=/m", "--rest_api=1"])  # TF Serving has no prefix matching either
    with pytest.raises(SystemExit, match="tensorflow_intra_op_parallelism must be >= 0"):
        parse_flags(["--model_base_path=/m", "--tensorflow_intra_op_parallelism=-1"])
    # Negative inter-op parallelism is TF's "every op in the caller's thread", passed to the Session as given.
    assert parse_flags(["--model_base_path=/m", "--tensorflow_inter_op_parallelism=-1"]).tensorflow_inter_op_parallelism == -1


def test_grpc_channel_arguments_become_server_options_and_a_bad_entry_is_named():
    from serving.server.flags import grpc_channel_arguments, parse_flags

    assert grpc_channel_arguments("grpc.max_connection_age_ms=2000, grpc.optimization_target=latency,") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.optimization_target", "latency")]
    assert grpc_channel_arguments("") == []
    with pytest.raises(SystemExit, match="'grpc.keepalive_time_ms' is not key=value"):
        parse_flags(["--model_base_path=/m", "--grpc_channel_arguments=grpc.keepalive_time_ms"])


# ---- config files -----------------------------------------------------------------------------------
def test_batching_parameters_in_tf_servings_text_format():
    from serving.server.config import BatchingParameters, parse_batching_parameters

    params = parse_batching_parameters(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1500 }\nnum_batch_threads { value: 2 }\n"
        "max_enqueued_batches { value: 7 }\nenable_large_batch_splitting { value: true }\n"
    )
    assert params == BatchingParameters(32, 1500, 7, 2, ())
    assert parse_batching_parameters("") == BatchingParameters()
    with pytest.raises(ServingError) as raised:
        parse_batching_parameters("max_batch_size { value: 0 }")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingError, match="allowed batch size"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 6")


def test_monitoring_and_model_config():
    from serving.server.config import parse_model_server_config, parse_monitoring_config

    monitoring = parse_monitoring_config('prometheus_config { enable: true, path: "/metrics" }')
    assert monitoring.prometheus_enabled and monitoring.prometheus_path == "/metrics"
    assert parse_monitoring_config("prometheus_config { enable: true }").prometheus_path == "/monitoring/prometheus/metrics"
    config = parse_model_server_config(
        'model_config_list { config { name: "m" base_path: "/m" model_platform: "tensorflow" '
        'model_version_policy { specific { versions: 3 versions: 4 } } version_labels { key: "stable" value: 3 } } }'
    )
    entry = config.model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [3, 4] and entry.version_labels["stable"] == 3
    with pytest.raises(ServingError, match="multiple times"):
        parse_model_server_config('model_config_list { config { name: "m" base_path: "/a" } config { name: "m" base_path: "/b" } }')
    with pytest.raises(ServingError, match="Invalid protobuf"):
        parse_model_server_config("model_config_list { config { nme: 1 } }")


def test_version_policies_pick_what_tf_serving_picks(tmp_path):
    from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs

    from serving.server.policy import aspired_versions, numeric_versions

    for name in ("1", "2", "10", "tmp", ".staging-3", "007x"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    assert sorted(numeric_versions(tmp_path)) == [1, 2, 10]
    policy = fs.FileSystemStoragePathSourceConfig.ServableVersionPolicy
    assert aspired_versions(policy(), [1, 2, 10]) == {10}  # default: latest 1
    assert aspired_versions(policy(latest=policy.Latest(num_versions=2)), [1, 2, 10]) == {2, 10}
    assert aspired_versions(policy(all=policy.All()), [1, 2, 10]) == {1, 2, 10}
    assert aspired_versions(policy(specific=policy.Specific(versions=[1, 7])), [1, 2, 10]) == {1}


# ---- batching ---------------------------------------------------------------------------------------
def _slow_double(calls: list):
    def run(inputs):
        calls.append(inputs["x"].shape[0])
        time.sleep(0.05)
        return {"y": inputs["x"] * 2, "first": inputs["x"][:, 0]}

    return run


def test_concurrent_tasks_merge_into_one_call_and_split_back_exactly():
    from serving.server.batching import BatchScheduler
    from serving.server.config import BatchingParameters

    calls: list[int] = []
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=1))
    results: dict[int, dict] = {}

    def client(i: int) -> None:
        x = np.full((2, 3), i, dtype=np.float32)
        results[i] = scheduler.run("model/1/serving_default", {"x": x}, _slow_double(calls))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    scheduler.stop()
    assert sum(calls) == 16 and len(calls) < 8  # merged
    for i, outputs in results.items():
        np.testing.assert_array_equal(outputs["y"], np.full((2, 3), 2 * i))
        np.testing.assert_array_equal(outputs["first"], [i, i])


def test_batching_limits_and_input_checks():
    from serving.server.batching import BatchScheduler
    from serving.server.config import BatchingParameters

    scheduler = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
    with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4"):
        scheduler.run("k", {"x": np.zeros((5, 1))}, _slow_double([]))
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        scheduler.run("k", {"x": np.zeros((2, 1)), "z": np.zeros((3, 1))}, _slow_double([]))
    with pytest.raises(ServingError, match="at least one dimension"):
        scheduler.run("k", {"x": np.float32(1.0)}, _slow_double([]))

    def fails(inputs):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad values")

    with pytest.raises(ServingError, match="bad values"):
        scheduler.run("k", {"x": np.zeros((1, 1))}, fails)
    scheduler.stop()


def test_full_queue_is_unavailable():
    from serving.server.batching import BatchScheduler
    from serving.server.config import BatchingParameters

    release = threading.Event()

    def blocked(inputs):
        release.wait(5)
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1))
    first = threading.Thread(target=scheduler.run, args=("k", {"x": np.zeros((1, 1))}, blocked))
    first.start()
    time.sleep(0.2)  # the first task is running; one more may wait
    second = threading.Thread(target=scheduler.run, args=("k", {"x": np.zeros((1, 1))}, blocked))
    second.start()
    time.sleep(0.2)
    with pytest.raises(ServingError) as raised:
        scheduler.run("k", {"x": np.zeros((1, 1))}, blocked)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    release.set()
    first.join(5)
    second.join(5)
    scheduler.stop()


def _loop_thread():
    import asyncio

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def test_one_batch_thread_batches_in_the_attached_loop_with_thread_callers_in_the_same_batches():
    import asyncio

    from serving.server.batching import BatchScheduler
    from serving.server.config import BatchingParameters

    calls: list[tuple[int, str]] = []

    def run(inputs):
        calls.append((inputs["x"].shape[0], threading.current_thread().name))
        return {"y": inputs["x"] * 2}

    scheduler = BatchScheduler(BatchingParameters(max_batch_size=16, batch_timeout_micros=200_000,
                                                  num_batch_threads=1, allowed_batch_sizes=[4, 8, 16]))
    loop, thread = _loop_thread()
    assert scheduler.attach_loop(loop) is True
    results: dict[int, dict] = {}

    async def loop_clients():
        async def one(i):
            results[i] = await scheduler.run_async("k", {"x": np.full((1, 2), i, np.float32)}, run)

        await asyncio.gather(*(one(i) for i in range(6)))

    rest = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, scheduler.run("k", {"x": np.full((2, 2), i, np.float32)}, run))) for i in (100, 101)]
    for client in rest:
        client.start()
    asyncio.run_coroutine_threadsafe(loop_clients(), loop).result(10)
    for client in rest:
        client.join(10)
    # 6 + 2 * 2 = 10 rows within the 0.2 s timeout: one batch, padded to 16, run by the loop's own thread.
    assert calls == [(16, thread.name)]
    for i in range(6):
        np.testing.assert_array_equal(results[i]["y"], np.full((1, 2), 2 * i))
    for i in (100, 101):
        np.testing.assert_array_equal(results[i]["y"], np.full((2, 2), 2 * i))

    # A full queue runs at once (no timeout wait); more tasks than one batch holds make two batches.
    calls.clear()
    started = time.monotonic()

    async def full():
        return await asyncio.gather(*(scheduler.run_async("k", {"x": np.full((4, 2), i, np.float32)}, run)
                                      for i in range(5)))

    outs = asyncio.run_coroutine_threadsafe(full(), loop).result(10)
    assert [size for size, _ in calls] == [16, 4] and time.monotonic() - started < 0.2 + 0.15
    assert [float(out["y"][0, 0]) for out in outs] == [0.0, 2.0, 4.0, 6.0, 8.0]
    scheduler.detach_loop()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    scheduler.stop()


def test_in_loop_batching_errors_and_full_queue():
    import asyncio

    from serving.server.batching import BatchScheduler
    from serving.server.config import BatchingParameters

    scheduler = BatchScheduler(BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1,
                                                  batch_timeout_micros=0))
    assert BatchScheduler(BatchingParameters(num_batch_threads=2)).attach_loop(asyncio.new_event_loop()) is False
    loop, thread = _loop_thread()
    scheduler.attach_loop(loop)

    def fails(inputs):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad values")

    with pytest.raises(ServingError, match="bad values"):
        scheduler.run("k", {"x": np.zeros((1, 1))}, fails)
    with pytest.raises(ServingError, match="Task size 2 is larger than maximum input batch size 1"):
        scheduler.run("k", {"x": np.zeros((2, 1))}, fails)

    async def two_at_once():
        # Both are queued before the loop runs either: the second exceeds max_enqueued_batches.
        first = asyncio.ensure_future(scheduler.run_async("k", {"x": np.ones((1, 1))}, lambda i: {"y": i["x"]}))
        second = asyncio.ensure_future(scheduler.run_async("k", {"x": np.ones((1, 1))}, lambda i: {"y": i["x"]}))
        return await asyncio.gather(first, second, return_exceptions=True)

    ok, refused = asyncio.run_coroutine_threadsafe(two_at_once(), loop).result(10)
    np.testing.assert_array_equal(ok["y"], [[1.0]])
    assert isinstance(refused, ServingError) and refused.code == grpc.StatusCode.UNAVAILABLE
    scheduler.detach_loop()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    scheduler.stop()


# ---- Predict responses as bytes -------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

_DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.float16])
_SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(outputs=st.dictionaries(st.text(min_size=1, max_size=6), st.tuples(_DTYPES, _SHAPES), min_size=1, max_size=3),
       model=st.text(max_size=8), version=st.integers(0, 2**40), signature=st.text(max_size=8), seed=st.integers(0, 9))
def test_encoded_predict_response_is_the_message_protobuf_writes(outputs, model, version, signature, seed):
    from tensorflow_serving.apis import predict_pb2

    from serving.server.tensors import encode_predict_response, ndarray_to_proto

    rng = np.random.default_rng(seed)
    arrays = {name: np.asarray(rng.normal(size=shape) * 100).astype(dtype) for name, (dtype, shape) in outputs.items()}
    wanted = sorted(arrays)
    expected = predict_pb2.PredictResponse()
    expected.model_spec.name, expected.model_spec.signature_name = model, signature
    expected.model_spec.version.value = version
    for name in wanted:
        expected.outputs[name].CopyFrom(ndarray_to_proto(arrays[name]))
        assert tuple(d.size for d in expected.outputs[name].tensor_shape.dim) == arrays[name].shape
    encoded = encode_predict_response(model, version, signature, arrays, wanted)
    assert predict_pb2.PredictResponse.FromString(encoded) == expected
    # Byte for byte too where protobuf's map order cannot differ and it writes tensor_content (not when empty).
    if len(wanted) == 1 and arrays[wanted[0]].size:
        assert encoded == expected.SerializeToString()


# ---- signatures --------------------------------------------------------------------------------------
def _tf1_saved_model(path) -> None:
    """A TF1 SavedModel whose signature keys name the other key's placeholder ("alpha" -> tensor "zeta:0")."""
    import tensorflow as tf

    with tf.Graph().as_default():
        zeta_named = tf.compat.v1.placeholder(tf.float32, [None, 2], name="zeta")
        alpha_named = tf.compat.v1.placeholder(tf.float32, [None, 3], name="alpha")
        out = tf.identity(tf.reduce_sum(alpha_named, axis=1) - 10 * zeta_named[:, 0], name="out")
        with tf.compat.v1.Session() as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"alpha": zeta_named, "zeta": alpha_named}, {"out": out}
            )
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()


def _tf2_saved_model(path) -> None:
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self) -> None:
            self.weights = tf.Variable([[1.0, 2.0, 3.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="zeta"),
                                      tf.TensorSpec([None, 2], tf.float32, name="alpha")])
        def serve(self, zeta, alpha):
            return {"out": tf.reduce_sum(zeta * self.weights, axis=1) - 10 * alpha[:, 0]}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.mark.parametrize("build", [_tf2_saved_model, _tf1_saved_model], ids=["tf2", "tf1-crossed-names"])
def test_signature_calls_the_graph_with_each_input_in_its_place(tmp_path, build):
    import tensorflow as tf

    from serving.server.servable import Servable

    build(tmp_path / "1")
    signature = Servable.load("m", 1, tmp_path / "1").signature("")
    assert signature.input_names == ["alpha", "zeta"]
    rng = np.random.default_rng(0)
    shapes = {name: spec.shape for name, spec in signature.inputs.items()}
    inputs = {name: rng.normal(size=(4, shape[1])).astype(np.float32) for name, shape in shapes.items()}
    signature.check_inputs(inputs)
    if build is _tf2_saved_model:  # the Session run equals TF2's eager loading of the same export
        eager = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"](**inputs)
        np.testing.assert_array_equal(signature(inputs)["out"], eager["out"].numpy())
    wide, narrow = (inputs["zeta"], inputs["alpha"]) if shapes["zeta"][1] == 3 else (inputs["alpha"], inputs["zeta"])
    weights = [1.0, 2.0, 3.0] if build is _tf2_saved_model else [1.0, 1.0, 1.0]
    np.testing.assert_allclose(signature(inputs)["out"], wide @ np.asarray(weights, np.float32) - 10 * narrow[:, 0],
                               rtol=1e-5)


def test_an_unbatched_call_runs_in_the_event_loop_only_when_the_server_was_idle(tmp_path):
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from serving.server.core import ServingCore
    from serving.server.servable import Servable

    class CountingExecutor(ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(max_workers=2)
            self.submitted = 0

        def submit(self, *args, **kwargs):
            self.submitted += 1
            return super().submit(*args, **kwargs)

    _tf2_saved_model(tmp_path / "1")
    signature = Servable.load("m", 1, tmp_path / "1").signature("")
    # This machine's timing out of the test: every call here is "short"; idle means 50 ms since the last call.
    core = ServingCore(None, None, None, inline_call_max_s=1.0, inline_idle_gap_s=0.05, inline_busy_hold_s=0.3)
    core.executor = CountingExecutor()
    rng = np.random.default_rng(1)

    def inputs(batch: int) -> dict:
        return {"zeta": rng.normal(size=(batch, 3)).astype(np.float32),
                "alpha": rng.normal(size=(batch, 2)).astype(np.float32)}

    def expected(batch_inputs: dict) -> np.ndarray:
        return batch_inputs["zeta"] @ np.asarray([1.0, 2.0, 3.0], np.float32) - 10 * batch_inputs["alpha"][:, 0]

    async def call(batch_inputs: dict) -> None:
        out = await core._call_unbatched(signature, batch_inputs)
        np.testing.assert_allclose(out["out"], expected(batch_inputs), rtol=1e-5)

    async def scenario() -> list[int]:
        submitted = []
        await call(inputs(4))  # unknown batch size: executor
        submitted.append(core.executor.submitted)
        await call(inputs(4))  # known and short, but right after the last call (it had queued): executor
        submitted.append(core.executor.submitted)
        await asyncio.sleep(0.06)
        await call(inputs(4))  # idle for longer than the gap: in the loop
        submitted.append(core.executor.submitted)
        # A call at batch 4 while one at an unknown size waits on the executor: both on the executor ...
        new, known = inputs(7), inputs(4)
        await asyncio.gather(call(new), call(known))
        submitted.append(core.executor.submitted)
        # ... and the overlap keeps calls on the executor for the hold, even after an idle gap.
        await asyncio.sleep(0.06)
        await call(inputs(4))
        submitted.append(core.executor.submitted)
        await asyncio.sleep(0.3)  # the hold is over: idle again, in the loop
        await call(inputs(4))
        submitted.append(core.executor.submitted)
        signature.call_seconds[4] = 5.0  # last took longer than the cap: executor again
        await asyncio.sleep(0.06)
        await call(inputs(4))
        submitted.append(core.executor.submitted)
        return submitted

    try:
        started = time.perf_counter()
        assert asyncio.run(scenario()) == [1, 2, 2, 4, 5, 5, 6]
        assert core._in_flight == 0 and set(signature.call_seconds) == {4, 7}
        assert time.perf_counter() - started < 5
    finally:
        core.executor.shutdown()


# ---- metrics -----------------------------------------------------------------------------------------
def test_metrics_render_tf_serving_names_in_prometheus_text():
    from serving.server.metrics import ServingMetrics

    metrics = ServingMetrics()
    metrics.request_count.inc("energy", "OK")
    metrics.request_count.inc("energy", "OK")
    metrics.request_count.inc("energy", "NOT_FOUND")
    metrics.request_latency.observe("energy", "predict", "GRPC", value=150.0)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="energy",status="OK"} 2' in text
    assert ':tensorflow:serving:request_count{model_name="energy",status="NOT_FOUND"} 1' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="energy",API="predict",entrypoint="GRPC",le="10"} 0' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="energy",API="predict",entrypoint="GRPC",le="+Inf"} 1' in text
    assert ':tensorflow:serving:request_latency_sum{model_name="energy",API="predict",entrypoint="GRPC"} 150' in text
    assert "# TYPE :tensorflow:serving:request_count counter" in text


# ---- fallback ----------------------------------------------------------------------------------------
def test_seasonal_naive_uses_last_week_then_yesterday():
    from serving.fallback import NoFallbackPossible, seasonal_naive

    ts = pd.date_range("2024-01-01", periods=24 * 8, freq="h", tz="UTC")
    history = pd.DataFrame({"ts": ts, "energy_kwh": np.arange(len(ts), dtype=float)})
    history.loc[history["ts"] == pd.Timestamp("2024-01-02 03:00", tz="UTC"), "energy_kwh"] = np.nan
    hours = pd.date_range("2024-01-09", periods=4, freq="h", tz="UTC")
    values = seasonal_naive(history, hours)
    week = {h: (h - pd.Timestamp("2024-01-01", tz="UTC")) // pd.Timedelta(hours=1) - 168 for h in hours}
    assert values[0] == week[hours[0]] and values[1] == week[hours[1]]
    assert values[3] == (hours[3] - pd.Timestamp("2024-01-01", tz="UTC")) // pd.Timedelta(hours=1) - 24  # week gap
    with pytest.raises(NoFallbackPossible, match="no energy_kwh"):
        seasonal_naive(history.iloc[-10:], hours)


# ---- export ------------------------------------------------------------------------------------------
def test_labels_and_config_keep_other_models(tmp_path):
    from serving.export import model_config, serving_labels
    from serving.server.config import parse_model_server_config

    assert serving_labels(3, 4) == {"stable": 3, "canary": 4}
    assert serving_labels(3, 3) == {"stable": 3}
    assert serving_labels(None, 2) == {"canary": 2}
    existing = parse_model_server_config(
        'model_config_list { config { name: "other" base_path: "/o" } config { name: "energy" base_path: "/old" } }'
    )
    config = model_config(existing, "energy", tmp_path / "energy", [4, 3, 4], {"stable": 3, "canary": 4})
    names = [entry.name for entry in config.model_config_list.config]
    assert names == ["other", "energy"]
    entry = config.model_config_list.config[1]
    assert entry.base_path == str(tmp_path / "energy") and entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [3, 4]
    assert dict(entry.version_labels) == {"stable": 3, "canary": 4}


def test_install_version_is_atomic_and_idempotent(tmp_path):
    from serving.export import ExportError, install_version

    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"pb")
    (source / "variables" / "variables.index").write_bytes(b"idx")
    model_dir = tmp_path / "models" / "energy"
    final, existed = install_version(source, model_dir, 7)
    assert final == model_dir / "7" and not existed
    assert (final / "variables" / "variables.index").read_bytes() == b"idx"
    assert [p.name for p in model_dir.iterdir()] == ["7"]  # no staging directory left behind
    assert install_version(source, model_dir, 7) == (final, True)
    (model_dir / "8").mkdir()
    with pytest.raises(ExportError, match="half-written"):
        install_version(source, model_dir, 8)


def test_xla_warmup_has_one_request_per_allowed_batch_size():
    import tensorflow as tf

    from serving.export import warmup_logs

    rng = np.random.default_rng(0)
    windows = [(rng.normal(size=(1, 4, 3)).astype("float32"), rng.normal(size=(1, 2, 5)).astype("float32"))
               for _ in range(3)]
    logs = warmup_logs("m", windows, max_records=1000, batch_sizes=(1, 4, 8))
    batches = [tf.make_ndarray(log.predict_log.request.inputs["history"]).shape[0] for log in logs]
    # Three batch-1 windows, one request with all three, then one per allowed size (rows repeated to fill it).
    assert batches == [1, 1, 1, 3, 1, 4, 8]
    eight = tf.make_ndarray(logs[-1].predict_log.request.inputs["history"])
    np.testing.assert_array_equal(eight[3], windows[0][0][0])
    assert len(warmup_logs("m", windows, max_records=5, batch_sizes=(1, 4, 8))) == 5
