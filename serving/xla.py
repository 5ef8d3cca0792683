"""XLA-compiled serving signatures, the way TF Serving runs them.

`write_xla_saved_model` re-exports a SavedModel with every serving signature wrapped in
`tf.function(jit_compile=True)`: TensorFlow marks those functions `_XlaMustCompile`, and whoever runs them
compiles one XLA:CPU executable per distinct input shape (hence padded batch sizes and warmup per size).
TF Serving runs such a model only with `--xla_cpu_compilation_enabled`; without it, the first request that
needs a compilation fails with "XLA compilation disabled". `uses_xla` finds the mark in a SavedModel, so
`wattflow serve` can honour the same flag.
"""

from __future__ import annotations

import shutil
from pathlib import Path

XLA_MUST_COMPILE = "_XlaMustCompile"
XLA_DISABLED_MESSAGE = "XLA compilation disabled"


def write_xla_saved_model(source: Path, destination: Path) -> Path:
    """`source` re-saved at `destination` with each signature jit-compiled; assets (warmup requests) are kept."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source))
    signatures = {}
    for name, function in loaded.signatures.items():
        _, kwargs = function.structured_input_signature
        specs = {key: tf.TensorSpec(spec.shape, spec.dtype, name=key) for key, spec in kwargs.items()}
        # Default argument: each wrapper keeps its own signature (a closure would see the loop's last one).
        compiled = tf.function(lambda __function=function, **inputs: __function(**inputs), jit_compile=True)
        signatures[name] = compiled.get_concrete_function(**specs)
    tf.saved_model.save(loaded, str(destination), signatures=signatures)
    keep_functional_control_flow(Path(destination))
    extra = Path(source) / "assets.extra"
    if extra.is_dir():
        shutil.copytree(extra, Path(destination) / "assets.extra", dirs_exist_ok=True)
    return Path(destination)


# Set on every functional While/If/Case a TF2 function traces: a graph-mode runtime (a TF1 Session, which is what
# TF Serving runs a SavedModel in) lowers such ops to Switch/Merge/Enter/Exit before running them.
LOWER_USING_SWITCH_MERGE = "_lower_using_switch_merge"


def keep_functional_control_flow(export_dir: Path) -> int:
    """Mark every functional control-flow op of the SavedModel not to be lowered; returns how many were marked.

    XLA compiles functional While/If only: lowered to Enter/Exit/Switch/Merge they have no XLA kernel, and a
    Session (TF Serving's runtime) lowers the loops of the functions an XLA-compiled signature calls before
    compiling it, so every request would fail with "Detected unsupported operations when trying to compile
    graph ... on XLA_CPU_JIT: Enter". Eager loading never lowers, which is why only a Session shows it
    (tests/integration/serving/test_serving_xla.py loads the export the way TF Serving does).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(export_dir) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(path.read_bytes())
    marked = 0
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        nodes = [node for function in graph.library.function for node in function.node_def]
        for node in [*graph.node, *nodes]:
            if LOWER_USING_SWITCH_MERGE in node.attr and node.attr[LOWER_USING_SWITCH_MERGE].b:
                node.attr[LOWER_USING_SWITCH_MERGE].b = False
                marked += 1
    if marked:
        path.write_bytes(proto.SerializeToString())
    return marked


def uses_xla(saved_model) -> bool:
    """Whether any function or node of the SavedModel proto must be XLA-compiled."""
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        for function in graph.library.function:
            if _must_compile(function.attr):
                return True
            if any(_must_compile(node.attr) for node in function.node_def):
                return True
        if any(_must_compile(node.attr) for node in graph.node):
            return True
    return False


def _must_compile(attrs) -> bool:
    return XLA_MUST_COMPILE in attrs and attrs[XLA_MUST_COMPILE].b


def export_dir_uses_xla(path: Path) -> bool:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    return uses_xla(proto)


__all__ = ["XLA_DISABLED_MESSAGE", "export_dir_uses_xla", "keep_functional_control_flow", "uses_xla",
           "write_xla_saved_model"]
