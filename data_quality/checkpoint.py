"""Run a suite on a batch through a Great Expectations checkpoint, and turn GE's results into ours.

GE is imported here only (it takes seconds to import), never at the package's top level. One file-backed
context per WATTFLOW_HOME keeps every validation result, so the Data Docs index under
`settings.data_docs_dir` lists the history of all batches, not only the last run's.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from data_quality.policy import QualityResult, policy_for
from data_quality.suites import SuiteSpec

DATA_DOCS_SITE = "wattflow"
# Seconds spent inside GE in this process (checkpoint runs, Data Docs), for the curate benchmark.
GE_SECONDS: dict[str, float] = {"validate": 0.0, "data_docs": 0.0}
_lock = threading.Lock()
_contexts: dict[str, Any] = {}
# Set in a Spark executor's Python worker (lakehouse/runners.py): several workers validate at once and a
# cluster's executors cannot reach WATTFLOW_HOME, so they validate in an in-memory context. Their results
# still land in monitoring.quality_results (through the driver); only the Data Docs history skips them.
EPHEMERAL = False


def quality_context(settings):
    """The GE context of this WATTFLOW_HOME (created on first use), with its Data Docs site configured."""
    import great_expectations as gx

    root = "<ephemeral>" if EPHEMERAL else str(Path(settings.home).resolve())
    with _lock:
        ctx = _contexts.get(root)
        if ctx is None and EPHEMERAL:
            ctx = gx.get_context(mode="ephemeral")
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            _contexts[root] = ctx
            return ctx
        if ctx is None:
            ctx = gx.get_context(mode="file", project_root_dir=root)
            # GE draws a tqdm bar per validation: noise in task logs and the demo's console.
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            docs_dir = str(settings.data_docs_dir)
            for name in list(ctx.get_site_names()):
                if name != DATA_DOCS_SITE:
                    ctx.delete_data_docs_site(name)
            site = {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
            if DATA_DOCS_SITE in ctx.get_site_names():
                ctx.update_data_docs_site(DATA_DOCS_SITE, site)
            else:
                ctx.add_data_docs_site(DATA_DOCS_SITE, site)
            _contexts[root] = ctx
        return ctx


def _checkpoint(ctx, spec: SuiteSpec):
    """Suite, asset, validation definition and checkpoint for `spec`, (re)declared from code each run."""
    import great_expectations as gx

    try:
        source = ctx.data_sources.get("wattflow_frames")
    except (KeyError, ValueError, Exception):  # GE raises its own lookup errors across versions
        source = ctx.data_sources.add_pandas("wattflow_frames")
    try:
        asset = source.get_asset(spec.asset)
    except (LookupError, Exception):
        asset = source.add_dataframe_asset(spec.asset)
    try:
        batch_definition = asset.get_batch_definition("whole")
    except (KeyError, Exception):
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    suite = gx.ExpectationSuite(name=spec.name, expectations=[e.build() for e in spec.expectations])
    suite = ctx.suites.add_or_update(suite)
    definition = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{spec.name}__validation", data=batch_definition, suite=suite)
    )
    return ctx.checkpoints.add_or_update(
        gx.Checkpoint(name=f"{spec.name}__checkpoint", validation_definitions=[definition], actions=[], result_format="SUMMARY")
    )


def _jsonable(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalars
    if isinstance(value, str):
        return value
    if isinstance(value, (int, bool)):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except TypeError:
        return str(value)


def run_suite(spec: SuiteSpec, frame: pd.DataFrame, batch: str, settings) -> list[QualityResult]:
    """Validate `frame` against `spec` in a checkpoint run named after the batch; one result per expectation."""
    import time

    import great_expectations as gx

    t0 = time.perf_counter()
    ctx = quality_context(settings)
    checkpoint = _checkpoint(ctx, spec)
    run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=gx.RunIdentifier(run_name=batch))
    GE_SECONDS["validate"] += time.perf_counter() - t0
    results: list[QualityResult] = []
    for validation in run.run_results.values():
        for r in validation.results:
            meta = r.expectation_config.meta or {}
            name = meta["name"]
            detail = r.result or {}
            unexpected = detail.get("unexpected_count")
            if unexpected is None and r.expectation_config.type == "expect_column_sum_to_be_between":
                # Our count expectations sum per-reading flags: the sum is the number of bad readings.
                unexpected = int(detail.get("observed_value") or 0)
            if unexpected is None and r.expectation_config.type == "expect_column_proportion_of_non_null_values_to_be_between":
                # GE reports only the share; the null count makes per-chunk results add up (lakehouse/runners.py).
                column = r.expectation_config.kwargs.get("column")
                if column in frame:
                    unexpected, element = int(frame[column].isna().sum()), len(frame)
            element = detail.get("element_count")
            error = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
            if error:
                observed = f"error: {error}"
            elif "observed_value" in detail:
                observed = _jsonable(detail["observed_value"])
            else:
                observed = f"{unexpected} of {element} rows ({detail.get('unexpected_percent') or 0:.3g}%)"
            results.append(
                QualityResult(
                    suite=spec.name,
                    batch=batch,
                    expectation=name,
                    success=bool(r.success),
                    observed_value=observed,
                    threshold=meta.get("threshold", ""),
                    unexpected_count=int(unexpected if unexpected is not None else (0 if r.success else 1)),
                    element_count=int(element if element is not None else len(frame)),
                    policy=policy_for(name, settings.quality),
                )
            )
    return results


def build_data_docs(settings) -> Path:
    """Render every stored validation result into the Data Docs site; returns its index page."""
    import time

    t0 = time.perf_counter()
    ctx = quality_context(settings)
    ctx.build_data_docs(site_names=[DATA_DOCS_SITE])
    GE_SECONDS["data_docs"] += time.perf_counter() - t0
    return Path(settings.data_docs_dir) / "index.html"
