"""XLA-compiled signatures served the way TF Serving serves them (`--xla_cpu_compilation_enabled`).

One small contract model exported twice (plain and `jit_compile=True`, same weights; shared with the security tests); in-process servers:
XLA enabled with batching padded to allowed sizes, and XLA disabled. The whole conformance suite runs in XLA
mode with `WATTFLOW_SERVING_XLA=1` (conftest); here the cheap checks that tell the modes apart.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.integration.serving.helpers import SPEC, free_port, make_inputs, predict_request

pytestmark = pytest.mark.integration

MODEL = "xla"
ALLOWED = (1, 4, 8)


@pytest.fixture(scope="module")
def exports(small_exports) -> dict[str, Path]:
    return small_exports


def _server(base: Path, **flags):
    from serving.server.flags import parse_flags
    from serving.server.main import ModelServer

    argv = [f"--port={free_port()}", f"--rest_api_port={free_port()}", f"--model_name={MODEL}",
            f"--model_base_path={base}", "--host=127.0.0.1", "--file_system_poll_wait_seconds=0"]
    server = ModelServer(parse_flags(argv + [f"--{k}={v}" for k, v in flags.items()]))
    server.start()
    return server


@pytest.fixture(scope="module")
def servers(exports, tmp_path_factory):
    batching = tmp_path_factory.mktemp("xla-batching") / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                        f"num_batch_threads {{ value: 1 }}\nallowed_batch_sizes: [{', '.join(map(str, ALLOWED))}]\n")
    started = {
        "enabled": _server(exports["xla"].parent, xla_cpu_compilation_enabled="true", enable_batching="true",
                           batching_parameters_file=batching, monitoring_config_file=_monitoring(batching.parent)),
        "disabled": _server(exports["xla"].parent),
    }
    yield started
    for server in started.values():
        server.stop(grace_s=0.5)


def _monitoring(directory: Path) -> Path:
    path = directory / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    return path


def _stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


def test_the_export_marks_the_signatures_for_xla(exports):
    from serving.xla import export_dir_uses_xla

    assert export_dir_uses_xla(exports["xla"]) and not export_dir_uses_xla(exports["plain"])


def test_outputs_with_and_without_xla_agree_on_every_signature(exports):
    from serving.server.servable import Servable

    plain, compiled = Servable.load(MODEL, 1, exports["plain"]), Servable.load(MODEL, 1, exports["xla"], xla_enabled=True)
    assert sorted(plain.signatures) == sorted(compiled.signatures) == ["serve", "serving_default"]
    for signature_name, batch in (("serving_default", 1), ("serving_default", 5), ("serve", 2)):
        want_signature, got_signature = plain.signature(signature_name), compiled.signature(signature_name)
        history, future = make_inputs(batch, seed=batch)
        inputs = {"history": history, "future": future}
        want, got = want_signature(inputs), got_signature(inputs)
        assert sorted(got) == sorted(want) == ["p10", "p50", "p90"]
        for name in ("p10", "p50", "p90"):
            assert got[name].shape == (batch, SPEC.horizon_h)
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_the_servers_session_equals_tf2_eager_loading_with_and_without_xla(exports):
    """Versions run in a TF1 Session, as in TF Serving: every signature must give what TF2's own loading of the
    same export gives (the XLA export compiled by both)."""
    import tensorflow as tf

    from serving.server.servable import Servable

    for kind in ("plain", "xla"):
        servable = Servable.load(MODEL, 1, exports[kind], xla_enabled=True)
        eager = tf.saved_model.load(str(exports[kind])).signatures
        for signature_name, batch in (("serving_default", 1), ("serving_default", 3), ("serve", 2)):
            history, future = make_inputs(batch, seed=10 + batch)
            got = servable.signature(signature_name)({"history": history, "future": future})
            want = eager[signature_name](history=history, future=future)
            assert sorted(got) == sorted(want) == ["p10", "p50", "p90"]
            for name in ("p10", "p50", "p90"):
                np.testing.assert_allclose(got[name], want[name].numpy(), rtol=1e-5, atol=1e-5,
                                           err_msg=f"{kind} {signature_name} {name}")


def test_the_callers_thread_and_the_inter_op_pool_give_the_same_answers(exports):
    """Small batches (every batch of an XLA signature) run in the calling thread, the rest on the Session's
    inter-op pool: the same graph either way, so bit-identical outputs."""
    from serving.server.servable import Servable, Signature

    for kind in ("plain", "xla"):
        signature = Servable.load(MODEL, 1, exports[kind], xla_enabled=True).signature("")
        assert signature._inline_rows == (float("inf") if kind == "xla" else Signature.INLINE_MAX_ROWS)
        for batch in (1, 6):
            history, future = make_inputs(batch, seed=20 + batch)
            inline = signature._run_inline(future, history)  # inputs in sorted name order
            pooled = signature._run_pooled(future, history)
            assert len(inline) == len(pooled) == 3
            for got, want in zip(inline, pooled):
                np.testing.assert_array_equal(got, want, err_msg=f"{kind} batch {batch}")
            np.testing.assert_array_equal(signature({"history": history, "future": future})["p50"], inline[1])


def test_an_xla_export_keeps_its_loops_functional_so_a_session_can_compile_it(exports, tmp_path):
    """A Session (TF Serving's runtime) lowers a function's While loops to Enter/Exit unless told not to, and XLA
    cannot compile those: the export marks every loop, and without the marks the same export fails."""
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    from serving.server.errors import ServingError
    from serving.server.servable import Servable
    from serving.xla import LOWER_USING_SWITCH_MERGE

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((exports["xla"] / "saved_model.pb").read_bytes())
    marks = [node.attr[LOWER_USING_SWITCH_MERGE].b for function in proto.meta_graphs[0].graph_def.library.function
             for node in function.node_def if LOWER_USING_SWITCH_MERGE in node.attr]
    assert marks and not any(marks)  # the LSTM's loops, none left to lower

    unmarked = tmp_path / "unmarked" / "1"
    shutil.copytree(exports["xla"], unmarked)
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if LOWER_USING_SWITCH_MERGE in node.attr:
                node.attr[LOWER_USING_SWITCH_MERGE].b = True
    (unmarked / "saved_model.pb").write_bytes(proto.SerializeToString())
    history, future = make_inputs(1, seed=4)
    with pytest.raises(ServingError, match="Enter"):
        Servable.load(MODEL, 1, unmarked, xla_enabled=True).signature("")({"history": history, "future": future})
    got = Servable.load(MODEL, 1, exports["xla"], xla_enabled=True).signature("")({"history": history,
                                                                                    "future": future})
    assert got["p50"].shape == (1, SPEC.horizon_h) and np.isfinite(got["p50"]).all()


def test_xla_disabled_fails_the_first_request_like_tf_serving(servers):
    with pytest.raises(grpc.RpcError) as raised:
        _stub(servers["disabled"]).Predict(predict_request(MODEL), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "XLA compilation disabled" in raised.value.details()
    assert "--xla_cpu_compilation_enabled=true" in raised.value.details()


def test_xla_enabled_serves_padded_batches_compiled_during_warmup(servers, exports):
    import requests

    from serving.server.servable import Servable

    server = servers["enabled"]
    reference = Servable.load(MODEL, 1, exports["plain"]).signature("")
    stub = _stub(server)
    metrics_url = f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics"
    warmup_s = next(float(line.rsplit(" ", 1)[1]) / 1e6 for line in requests.get(metrics_url, timeout=10).text.splitlines()
                    if line.startswith(":tensorflow:serving:model_warmup_latency_sum"))
    # Warmup compiled len(ALLOWED) shapes; a request that compiled one more would take about a share of that.
    compile_s = warmup_s / len(ALLOWED)
    for batch in (3, 1, 8):  # 3 is padded to 4; every size was compiled before the version became AVAILABLE
        started = time.perf_counter()
        response = stub.Predict(predict_request(MODEL, batch=batch, seed=batch), timeout=10)
        elapsed = time.perf_counter() - started
        history, future = make_inputs(batch, seed=batch)
        want = reference({"history": history, "future": future})
        import tensorflow as tf

        got = tf.make_ndarray(response.outputs["p50"])
        assert got.shape == (batch, SPEC.horizon_h)
        np.testing.assert_allclose(got, want["p50"], rtol=1e-5, atol=1e-5)
        # A compiled shape runs in about a millisecond; compiling one takes hundreds (the machine may be loaded,
        # so the bound is relative to this run's own warmup).
        assert elapsed < max(0.1, compile_s / 3), f"batch {batch}: {elapsed:.3f}s vs compile {compile_s:.3f}s"
    metrics = requests.get(metrics_url, timeout=10).text
    totals = {line.split("{")[0].rsplit("_", 1)[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith((":tensorflow:serving:batching_session:processed_batch_size_sum",
                                  ":tensorflow:serving:batching_session:processed_batch_size_count"))}
    # Three batches of 4 (3 padded), 1 and 8 rows: 13 rows processed, not 12.
    assert totals == {"sum": 13.0, "count": 3.0}
