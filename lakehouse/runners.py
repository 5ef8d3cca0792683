"""One core, two runners: where the per-building stages run.

A stage's core is a pure function of one chunk of buildings (their rows, the registry, the settings):
`curation.readings_chunk` (reading checks, quarantine, silver hours) and `features_chunk` (gold features,
scaling of buildings new to the catalogue). Both runners call exactly those functions over exactly the
same chunks (`chunk_of`: the registry's sorted building ids cut every `compute.chunk_buildings`), so the
tables they write are identical, row for row:

- local: this process, chunk after chunk, tables through the settings' engine (delta-rs by default);
  memory holds one chunk's rows, never the portfolio's;
- spark: `groupBy("chunk").applyInArrow(core)` on the cluster, the outputs MERGEd by delta-spark straight
  from the executors; only summaries (expectation results, new scaling parameters) reach the driver.

A core has several outputs (silver, quarantine and expectation results; features, scaling and results).
On Spark one grouped call returns one Arrow table, so the outputs travel as one *envelope*: the union of
the outputs' columns plus `table` (which output a row belongs to) and `chunk`. The envelope is persisted
once on the executors and split per table there (a filter and a select per output), so the core runs
once per chunk however many tables it feeds. The local runner uses the same envelope, so both see the
same rows in the same types.

Expectation suites run inside the core, per chunk, on the chunk's frames; `merge_results` folds the
chunks' results into one result per expectation and batch (counts add up, shares are recomputed from the
counts, a chunk's failure fails the batch), which is what lands in `monitoring.quality_results`. A `fail`
policy still stops the whole batch before anything of it is written: the local runner parks each chunk's
envelope in a scratch file until every chunk has been judged, the Spark runner keeps it persisted.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_quality.policy import QualityResult, policy_for
from lakehouse.engine import WriteResult, conform
from lakehouse.schemas import ANOMALIES, BUILDING_HOURLY, FEATURES, FORECASTS, QUARANTINE_READINGS, SENSOR_READINGS, TableContract
from wattflow.log import get_logger

log = get_logger(__name__)

RESULT_SCHEMA = pa.schema([
    ("suite", pa.string()), ("batch", pa.string()), ("expectation", pa.string()), ("success", pa.bool_()),
    ("observed_value", pa.string()), ("threshold", pa.string()), ("unexpected_count", pa.int64()),
    ("element_count", pa.int64()), ("policy", pa.string()),
])
SCALING_SCHEMA = pa.schema([("scaled_feature", pa.string()), ("building_id", pa.string()),
                            ("scaling_mean", pa.float64()), ("scaling_std", pa.float64())])
# One row per chunk: how many input rows the core saw (the stage's "readings" figure, without a second scan).
STATS_SCHEMA = pa.schema([("input_rows", pa.int64())])
READING_COLUMNS = ["building_id", "sensor_id", "metric", "ts", "value", "unit", "source", "ingested_at"]


# -- chunks ----------------------------------------------------------------------------------------


def chunk_of(building_ids: list[str], chunk_buildings: int) -> dict[str, int]:
    """Building id -> chunk number: sorted ids cut every `chunk_buildings`, the same on both runners."""
    return {b: i // chunk_buildings for i, b in enumerate(sorted(building_ids))}


def chunk_members(chunks: dict[str, int]) -> dict[int, list[str]]:
    members: dict[int, list[str]] = {}
    for b, c in sorted(chunks.items()):
        members.setdefault(c, []).append(b)
    return members


# -- envelope --------------------------------------------------------------------------------------


class Envelope:
    """Several outputs of one core as one Arrow table: the union of their columns, `table` and `chunk`."""

    def __init__(self, outputs: dict[str, pa.Schema]) -> None:
        self.outputs = outputs
        fields: dict[str, pa.Field] = {"table": pa.field("table", pa.string()), "chunk": pa.field("chunk", pa.int64())}
        for name, schema in outputs.items():
            for f in schema:
                seen = fields.get(f.name)
                if seen is not None and seen.type != f.type:
                    raise TypeError(f"envelope: column {f.name!r} is {seen.type} in one output and {f.type} in {name}")
                fields.setdefault(f.name, pa.field(f.name, f.type))
        self.schema = pa.schema(list(fields.values()))

    def pack(self, chunk: int, parts: dict[str, pa.Table]) -> pa.Table:
        tables = []
        for name, part in parts.items():
            n = part.num_rows
            columns = {f.name: (part.column(f.name) if f.name in part.column_names else pa.nulls(n, f.type))
                       for f in self.schema if f.name not in ("table", "chunk")}
            columns["table"] = pa.array([name] * n, pa.string())
            columns["chunk"] = pa.array(np.full(n, chunk, dtype=np.int64))
            tables.append(pa.table({f.name: pc.cast(columns[f.name], f.type) for f in self.schema}, schema=self.schema))
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def unpack(self, envelope: pa.Table, name: str) -> pa.Table:
        rows = envelope.filter(pc.equal(envelope.column("table"), name))
        return rows.select(self.outputs[name].names)

    def spark_schema(self):
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self.schema)


CURATE = Envelope({"silver": BUILDING_HOURLY.schema, "quarantine": QUARANTINE_READINGS.schema, "results": RESULT_SCHEMA,
                   "stats": STATS_SCHEMA})
FEATURES_OUT = Envelope({"features": FEATURES.schema, "scaling": SCALING_SCHEMA, "results": RESULT_SCHEMA,
                         "stats": STATS_SCHEMA})

ANOMALY_OUT = Envelope({"anomalies": ANOMALIES.schema, "results": RESULT_SCHEMA, "stats": STATS_SCHEMA})
SCORES = Envelope({"forecasts": FORECASTS.schema, "results": RESULT_SCHEMA, "stats": STATS_SCHEMA})


def _stats(rows: int) -> pa.Table:
    return pa.table({"input_rows": pa.array([rows], pa.int64())})


def results_table(results: list[QualityResult]) -> pa.Table:
    return pa.Table.from_pylist([r.as_row() for r in results], schema=RESULT_SCHEMA)


def results_from_table(table: pa.Table) -> list[QualityResult]:
    return [QualityResult(**row) for row in table.to_pylist()]


def _frame_table(contract: TableContract, frame: pd.DataFrame) -> pa.Table:
    if not len(frame):
        return contract.schema.empty_table()
    return conform(contract, pa.Table.from_pandas(frame[[c for c in contract.schema.names if c in frame.columns]],
                                                  preserve_index=False))


# -- merging a batch's per-chunk expectation results --------------------------------------------------


def _share(observed: str) -> float:
    try:
        return float(observed.rsplit(" ", 1)[-1])
    except ValueError:
        return 0.0


def merge_results(per_chunk: list[list[QualityResult]], settings) -> list[QualityResult]:
    """One result per (suite, expectation) for the batch from the results of its chunks.

    Counts add up; a share or proportion is recomputed from the summed counts; a sum is the sum; an
    expectation holds for the batch only where it held on every chunk (row-level checks, keys unique per
    building) or where the recomputed figure is within its bounds (sums, shares, proportions). One chunk
    (a portfolio within one chunk) keeps GE's own results unchanged.
    """
    per_chunk = [c for c in per_chunk if c]
    if len(per_chunk) <= 1:
        return per_chunk[0] if per_chunk else []
    from data_quality.checkpoint import _jsonable
    from data_quality.suites import suite_catalogue

    quality = settings.quality
    specs = {(s.name, e.name): e for s in suite_catalogue(quality).values() for e in s.expectations}
    grouped: dict[tuple[str, str], list[QualityResult]] = {}
    for results in per_chunk:
        for r in results:
            grouped.setdefault((r.suite, r.expectation), []).append(r)
    merged = []
    for (suite, name), rs in grouped.items():
        first = rs[0]
        unexpected = sum(r.unexpected_count for r in rs)
        element = sum(r.element_count for r in rs)
        spec = specs.get((suite, name))
        errors = [r.observed_value for r in rs if r.observed_value.startswith("error:")]
        if name == "reject_share":
            share = unexpected / element if element else 0.0
            success, observed = share <= quality.max_reject_share, f"{share:.6f}"
        elif name == "systematic_reject_share":
            worst = max(rs, key=lambda r: _share(r.observed_value))
            success, observed = all(r.success for r in rs), worst.observed_value
        elif errors:
            success, observed = False, errors[0]
        elif spec is not None and spec.type == "ExpectColumnSumToBeBetween":
            lo, hi = spec.kwargs.get("min_value"), spec.kwargs.get("max_value")
            success = (lo is None or unexpected >= lo) and (hi is None or unexpected <= hi)
            observed = str(unexpected)
        elif spec is not None and spec.type == "ExpectColumnProportionOfNonNullValuesToBeBetween":
            share = 1.0 - unexpected / element if element else 0.0
            lo, hi = spec.kwargs.get("min_value"), spec.kwargs.get("max_value")
            success = (lo is None or share >= lo) and (hi is None or share <= hi)
            observed = _jsonable(share)
        else:
            success = all(r.success for r in rs)
            observed = f"{unexpected} of {element} rows ({(100.0 * unexpected / element if element else 0.0):.3g}%)"
        merged.append(QualityResult(suite, first.batch, name, bool(success), observed, first.threshold, unexpected,
                                    element, policy_for(name, quality)))
    return merged


# -- the per-chunk cores as the runners call them -----------------------------------------------------


def curate_chunk_envelope(readings: pd.DataFrame, chunk: int, ids: list[str], registry, settings, *, start, end,
                          batch: str, observations, forecasts, validate: bool, now) -> pa.Table:
    """`readings_chunk` on one chunk, its outputs packed in the CURATE envelope."""
    from lakehouse.curation import readings_chunk

    # Rows in key order whatever order storage returned them in, so both runners feed the core alike.
    readings = readings.sort_values(["building_id", "sensor_id", "metric", "ts"], kind="stable").reset_index(drop=True)
    sites = {registry.get(b).site_id for b in ids}
    obs = None if observations is None else observations[observations["site_id"].isin(sites)]
    fc = None if forecasts is None else forecasts[forecasts["site_id"].isin(sites)]
    hourly, rejects, results = readings_chunk(readings, registry, settings, start=start, end=end, batch=batch,
                                              building_ids=ids, observations=obs, forecasts=fc, validate=validate, now=now)
    return CURATE.pack(chunk, {"silver": _frame_table(BUILDING_HOURLY, hourly),
                               "quarantine": _frame_table(QUARANTINE_READINGS, rejects),
                               "results": results_table(results), "stats": _stats(len(readings))})


def features_chunk(silver: pd.DataFrame, registry, settings, *, scaling: dict, start, end, batch: str,
                   validate: bool) -> tuple[pd.DataFrame, dict, list[QualityResult]]:
    """The per-building core of gold: features for a chunk's silver (with its margin) in [start, end),
    scaling fitted for buildings the catalogue does not know yet, and the gold suite's results."""
    from data_quality.suites import gold_features_suite
    from lakehouse.gold import fit_scaling, hourly_to_features

    silver = silver.sort_values(["building_id", "ts"], kind="stable").reset_index(drop=True)
    known = {k: dict(v) for k, v in scaling.items()}
    features = hourly_to_features(silver, registry, settings, scaling=known or None)
    keys = ("temperature_std", "humidity_std", "occupancy_std")
    missing = {b for b in features["building_id"].unique() if any(b not in known.get(k, {}) for k in keys)}
    fitted: dict = {}
    if missing:
        fitted = fit_scaling(features[features["building_id"].isin(missing)])
        for k, per_building in fitted.items():
            known.setdefault(k, {}).update(per_building)
        features = hourly_to_features(silver, registry, settings, scaling=known)
    features = features[(features["ts"] >= start) & (features["ts"] < end)].reset_index(drop=True)
    results: list[QualityResult] = []
    if validate and len(features):
        from data_quality.checkpoint import run_suite

        results = run_suite(gold_features_suite(settings.quality), features, batch, settings)
    return features, fitted, results


def features_chunk_envelope(silver: pd.DataFrame, chunk: int, registry, settings, *, scaling, start, end, batch,
                            validate) -> pa.Table:
    features, fitted, results = features_chunk(silver, registry, settings, scaling=scaling, start=start, end=end,
                                               batch=batch, validate=validate)
    rows = [{"scaled_feature": k, "building_id": b, "scaling_mean": p["mean"], "scaling_std": p["std"]}
            for k, per_building in fitted.items() for b, p in per_building.items()]
    return FEATURES_OUT.pack(chunk, {"features": _frame_table(FEATURES, features),
                                     "scaling": pa.Table.from_pylist(rows, schema=SCALING_SCHEMA),
                                     "results": results_table(results), "stats": _stats(len(silver))})


@dataclass(frozen=True)
class ScoringJob:
    """What batch scoring needs besides the chunk's rows: origins, the model, the catalogue's scaling and
    the weather forecasts of the portfolio's sites (small: sites x hours, read once on the driver)."""

    origins: tuple[pd.Timestamp, ...]
    model_dir: str
    model_version: int
    scaling: dict
    forecasts: pd.DataFrame

    @property
    def gold_from(self) -> pd.Timestamp:
        return min(self.origins)

    def windows(self, settings) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
        """(gold from, silver from, until): history needs lookback + 48 h of gold, future rows margin_h of silver."""
        first, last = min(self.origins), max(self.origins)
        return (first - pd.Timedelta(hours=settings.model.lookback_h + 48),
                first - pd.Timedelta(hours=settings.features.margin_h), last)


def score_chunk_envelope(gold: pd.DataFrame, silver: pd.DataFrame, chunk: int, ids: list[str], registry, settings,
                         job: ScoringJob, model_dir: str) -> pa.Table:
    """`serving.batch_scoring.score_chunk` on one chunk, packed in the SCORES envelope."""
    from serving.batch_scoring import predictor, score_chunk

    gold = gold.sort_values(["building_id", "ts"], kind="stable").reset_index(drop=True)
    silver = silver.sort_values(["building_id", "ts"], kind="stable").reset_index(drop=True)
    model = predictor(model_dir, job.model_version, settings)
    out = score_chunk(gold, silver, job.forecasts, ids, job.origins, registry, settings, model=model, scaling=job.scaling)
    return SCORES.pack(chunk, {"forecasts": _frame_table(FORECASTS, out), "results": results_table([]),
                               "stats": _stats(len(gold))})


@dataclass(frozen=True)
class AnomalyJob:
    """Anomaly detection of [start, end) against the weeks from `history_start`; `meta`: tariff and emission
    factor per building (small, from the registry); `detected_at` stamped on every row of the pass."""

    history_start: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    meta: dict
    detected_at: pd.Timestamp


ANOMALY_FEATURE_COLUMNS = ["building_id", "ts", "energy_kwh", "energy_valid", "hour_of_day", "day_of_week", "is_weekend",
                           "is_holiday", "temperature"]


def anomalies_chunk_envelope(features: pd.DataFrame, forecasts: pd.DataFrame, chunk: int, settings, job: AnomalyJob) -> pa.Table:
    from monitoring.anomaly_store import anomalies_chunk

    for frame in (features, forecasts):
        for column in ("ts", "issued_at"):
            if column in frame.columns:
                frame[column] = pd.to_datetime(frame[column], utc=True)
    priced = anomalies_chunk(features, forecasts, job.meta, settings, job.start)
    if len(priced):
        priced = priced.assign(detected_at=job.detected_at)
    return ANOMALY_OUT.pack(chunk, {"anomalies": _frame_table(ANOMALIES, priced), "results": results_table([]),
                                    "stats": _stats(len(features))})


def scaling_from_table(table: pa.Table) -> dict:
    out: dict = {}
    for r in table.to_pylist():
        out.setdefault(r["scaled_feature"], {})[r["building_id"]] = {"mean": r["scaling_mean"], "std": r["scaling_std"]}
    return out


# -- what a runner hands back to the stage shells -----------------------------------------------------


@dataclass
class StageOutcome:
    """A runner's answer to a stage shell: per-chunk results (merged by the shell), and `write()` which
    writes every output table and returns their WriteResults; `discard()` drops the parked outputs."""

    results: list[list[QualityResult]]
    summaries: dict[str, pa.Table]
    write: Callable[[], dict[str, Any]]
    discard: Callable[[], None]
    rows: dict[str, int]

    @property
    def inputs(self) -> int:
        """Input rows (readings, silver hours) the cores saw over all chunks."""
        stats = self.summaries.get("stats")
        return int(pc.sum(stats.column("input_rows")).as_py() or 0) if stats is not None and stats.num_rows else 0


def _add(before: "WriteResult | None", after: "WriteResult") -> "WriteResult":
    """One table's writes over several chunks as one result: the last version, the counts summed."""
    if before is None:
        return after
    return WriteResult(after.table, after.version, before.rows_inserted + after.rows_inserted,
                       before.rows_updated + after.rows_updated, before.rows_unchanged + after.rows_unchanged,
                       before.conflicts_retried + after.conflicts_retried)


def _date_filters(start: pd.Timestamp, end: pd.Timestamp) -> list:
    return [("date", ">=", start.date()), ("date", "<=", end.date())]


class LocalRunner:
    """Chunk after chunk in this process; each chunk's envelope parked in a scratch Arrow file until the
    batch has been judged, then written chunk by chunk (memory: one chunk)."""

    name = "local"

    def __init__(self, engine, settings) -> None:
        self.engine = engine
        self.settings = settings

    def _run(self, envelope: Envelope, chunks: dict[str, int], make: Callable[[int, list[str]], pa.Table | None],
             contracts: dict[str, TableContract], summary_outputs: tuple[str, ...]) -> StageOutcome:
        # Under the home's cache, not /tmp: a backfill's parked chunks can be as large as its silver.
        cache = Path(self.settings.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="chunks-", dir=cache))
        files: list[Path] = []
        results: list[list[QualityResult]] = []
        summary_outputs = (*summary_outputs, "stats")
        summaries: dict[str, list[pa.Table]] = {n: [] for n in summary_outputs}
        rows = {n: 0 for n in contracts}
        try:
            for chunk, ids in chunk_members(chunks).items():
                packed = make(chunk, ids)
                if packed is None:
                    continue
                results.append(results_from_table(envelope.unpack(packed, "results")))
                for n in summary_outputs:
                    summaries[n].append(envelope.unpack(packed, n))
                for n in contracts:
                    rows[n] += envelope.unpack(packed, n).num_rows
                path = scratch / f"chunk-{chunk:06d}.arrow"
                with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, packed.schema) as writer:
                    writer.write_table(packed)
                files.append(path)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

        def write() -> dict[str, Any]:
            written: dict[str, WriteResult] = {}
            try:
                for path in files:
                    with pa.memory_map(str(path)) as source:
                        packed = pa.ipc.open_file(source).read_all()
                    for n, contract in contracts.items():
                        part = envelope.unpack(packed, n)
                        if part.num_rows:
                            written[n] = _add(written.get(n), self.engine.upsert(contract, part))
                for n, contract in contracts.items():
                    if n not in written and not self.engine.exists(contract):
                        written[n] = self.engine.upsert(contract, contract.schema.empty_table())
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return written

        summary = {n: (pa.concat_tables(t) if t else envelope.outputs[n].empty_table()) for n, t in summaries.items()}
        return StageOutcome(results, summary, write, lambda: shutil.rmtree(scratch, ignore_errors=True), rows)

    def curate(self, registry, chunks, *, read_from, read_to, start, end, batch, observations, forecasts, validate, now):
        def make(chunk: int, ids: list[str]) -> pa.Table | None:
            filters = [*_date_filters(read_from, read_to), ("building_id", "in", ids)]
            table = self.engine.read(SENSOR_READINGS, filters=filters, columns=READING_COLUMNS)
            readings = table.to_pandas(strings_to_categorical=True, self_destruct=True)
            readings = readings[(readings["ts"] >= read_from) & (readings["ts"] < read_to)]
            if not len(readings):
                return None
            return curate_chunk_envelope(readings, chunk, ids, registry, self.settings, start=start, end=end, batch=batch,
                                         observations=observations, forecasts=forecasts, validate=validate, now=now)

        return self._run(CURATE, chunks, make, {"silver": BUILDING_HOURLY, "quarantine": QUARANTINE_READINGS}, ())

    def features(self, registry, chunks, *, read_from, start, end, batch, scaling, validate):
        def make(chunk: int, ids: list[str]) -> pa.Table | None:
            filters = [*_date_filters(read_from, end), ("building_id", "in", ids)]
            silver = self.engine.read(BUILDING_HOURLY, filters=filters).to_pandas(strings_to_categorical=False, self_destruct=True)
            silver = silver[(silver["ts"] >= read_from) & (silver["ts"] < end)]
            if not len(silver):
                return None
            return features_chunk_envelope(silver, chunk, registry, self.settings, scaling=scaling, start=start, end=end,
                                           batch=batch, validate=validate)

        return self._run(FEATURES_OUT, chunks, make, {"features": FEATURES}, ("scaling",))

    def score(self, registry, chunks, job: ScoringJob):
        gold_from, silver_from, until = job.windows(self.settings)

        def make(chunk: int, ids: list[str]) -> pa.Table | None:
            gold = self.engine.read(FEATURES, filters=[*_date_filters(gold_from, until), ("building_id", "in", ids)]).to_pandas()
            gold = gold[(gold["ts"] >= gold_from) & (gold["ts"] < until)]
            if not len(gold):
                return None
            silver = self.engine.read(BUILDING_HOURLY, filters=[*_date_filters(silver_from, until),
                                                                ("building_id", "in", ids)]).to_pandas()
            silver = silver[(silver["ts"] >= silver_from) & (silver["ts"] < until)]
            return score_chunk_envelope(gold, silver, chunk, ids, registry, self.settings, job, job.model_dir)

        return self._run(SCORES, chunks, make, {"forecasts": FORECASTS}, ())

    def anomalies(self, chunks, job: AnomalyJob):
        from monitoring.anomaly_store import read_window

        def make(chunk: int, ids: list[str]) -> pa.Table | None:
            features = read_window(self.engine, FEATURES, job.history_start, job.end, ids, ANOMALY_FEATURE_COLUMNS)
            if features.empty:
                return None
            forecasts = read_window(self.engine, FORECASTS, job.start, job.end, ids)
            return anomalies_chunk_envelope(features, forecasts, chunk, self.settings, job)

        return self._run(ANOMALY_OUT, chunks, make, {"anomalies": ANOMALIES}, ("anomalies",))

    def monitor(self, chunks, job):
        """The monitoring check's per-building core (monitoring/assessment.py) chunk by chunk; it writes no
        table: the `buildings` and `samples` summaries go back to the pass, which merges and decides."""
        from monitoring.anomaly_store import read_window
        from monitoring.assessment import MONITOR_FEATURE_COLUMNS, MONITOR_FORECAST_COLUMNS, MONITOR_OUT, monitor_chunk_envelope

        def make(chunk: int, ids: list[str]) -> pa.Table | None:
            features = read_window(self.engine, FEATURES, job.read_from, job.end, ids, MONITOR_FEATURE_COLUMNS)
            if features.empty:
                return None
            forecasts = read_window(self.engine, FORECASTS, job.read_from, job.end, ids, MONITOR_FORECAST_COLUMNS)
            return monitor_chunk_envelope(features, forecasts, chunk, self.settings, job)

        return self._run(MONITOR_OUT, chunks, make, {}, ("buildings", "samples"))


class SparkRunner:
    """`groupBy("chunk").applyInArrow(core)` on the cluster; outputs MERGEd from the executors."""

    name = "spark"

    def __init__(self, engine, settings) -> None:
        from lakehouse.spark_engine import SparkEngine

        if not isinstance(engine, SparkEngine):
            raise TypeError(f"compute.runner=spark needs the Spark table engine, got {engine.name!r} "
                            "(get_engine(settings) picks it whenever compute.runner is spark)")
        self.engine = engine
        self.spark = engine.spark
        self.settings = settings

    def _table(self, contract: TableContract, read_from, read_to, ids: list[str] | None):
        from pyspark.sql import functions as F

        df = self.spark.read.format("delta").load(self.engine._path(contract))
        df = df.where((F.col("date") >= F.lit(read_from.date())) & (F.col("date") <= F.lit(read_to.date())))
        df = df.where((F.col("ts") >= F.lit(read_from.to_pydatetime())) & (F.col("ts") < F.lit(read_to.to_pydatetime())))
        return df.where(F.col("building_id").isin(ids)) if ids is not None else df

    def _with_chunks(self, df, chunks: dict[str, int]):
        from pyspark.sql import functions as F

        partitions = int(self.spark.conf.get("spark.sql.shuffle.partitions"))
        slots = spread_slots(sorted(set(chunks.values())), partitions)
        mapping = self.spark.createDataFrame(pd.DataFrame({"building_id": list(chunks), "chunk": list(chunks.values()),
                                                           "slot": [slots[c] for c in chunks.values()]}),
                                             schema="building_id string, chunk long, slot long")
        return df.join(F.broadcast(mapping), on="building_id", how="inner")

    def _run(self, envelope: Envelope, grouped, core, contracts: dict[str, TableContract],
             summary_outputs: tuple[str, ...], cogrouped=None) -> StageOutcome:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        summary_outputs = (*summary_outputs, "stats")
        if cogrouped is None:
            out = grouped.groupBy("slot").applyInArrow(core, schema=envelope.spark_schema())
        else:
            out = grouped.groupBy("slot").cogroup(cogrouped.groupBy("slot")).applyInArrow(core, schema=envelope.spark_schema())
        # Computed once, kept on the executors: the summaries and every table's MERGE read it.
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        small = out.where(F.col("table").isin(["results", *summary_outputs]))
        collected = small.select(*envelope.schema.names).toArrow().cast(envelope.schema)
        results = []
        res = envelope.unpack(collected, "results")
        chunk_col = collected.filter(pc.equal(collected.column("table"), "results")).column("chunk").to_numpy()
        for c in sorted(set(chunk_col.tolist())):
            results.append(results_from_table(res.filter(pa.array(chunk_col == c))))
        summaries = {n: envelope.unpack(collected, n) for n in summary_outputs}
        counts = {r["table"]: int(r["count"]) for r in out.groupBy("table").count().collect()}
        rows = {n: counts.get(n, 0) for n in contracts}

        def write() -> dict[str, Any]:
            try:
                written = {}
                for n, contract in contracts.items():
                    part = out.where(F.col("table") == n).select(*contract.schema.names)
                    written[n] = self.engine.upsert_frame(contract, part, rows=rows[n])
                return written
            finally:
                out.unpersist()

        return StageOutcome(results, summaries, write, lambda: out.unpersist(), rows)

    def curate(self, registry, chunks, *, read_from, read_to, start, end, batch, observations, forecasts, validate, now):
        settings = self.settings
        members = chunk_members(chunks)
        readings = self._table(SENSOR_READINGS, read_from, read_to, list(chunks)).select(*READING_COLUMNS)

        def core(table: pa.Table) -> pa.Table:
            _on_executor()
            chunk = int(table.column("chunk")[0].as_py())
            frame = table.drop(["chunk", "slot"]).to_pandas(strings_to_categorical=True)
            return curate_chunk_envelope(frame, chunk, members[chunk], registry, settings, start=start, end=end,
                                         batch=batch, observations=observations, forecasts=forecasts,
                                         validate=validate, now=now)

        return self._run(CURATE, self._with_chunks(readings, chunks), core,
                         {"silver": BUILDING_HOURLY, "quarantine": QUARANTINE_READINGS}, ())

    def features(self, registry, chunks, *, read_from, start, end, batch, scaling, validate):
        settings = self.settings
        silver = self._table(BUILDING_HOURLY, read_from, end, list(chunks))

        def core(table: pa.Table) -> pa.Table:
            _on_executor()
            chunk = int(table.column("chunk")[0].as_py())
            frame = table.drop(["chunk", "slot"]).to_pandas(strings_to_categorical=False)
            frame = frame[list(BUILDING_HOURLY.schema.names)]
            return features_chunk_envelope(frame, chunk, registry, settings, scaling=scaling, start=start, end=end,
                                           batch=batch, validate=validate)

        return self._run(FEATURES_OUT, self._with_chunks(silver, chunks), core, {"features": FEATURES}, ("scaling",))

    def _ship_model(self, model_dir: str, name: str) -> str:
        """Send the SavedModel to every executor as one zip (SparkContext.addFile; Spark ships no folders
        to a cluster), once per session; returns the file name executors resolve with SparkFiles.get.
        Works where executors share no disk with the driver."""
        shipped = _SHIPPED.get((id(self.spark), model_dir))
        if shipped is None:
            staging = Path(tempfile.mkdtemp(prefix="wattflow-model-")) / f"{name}-{uuid.uuid4().hex[:8]}"
            archive = shutil.make_archive(str(staging), "zip", root_dir=model_dir)
            self.spark.sparkContext.addFile(archive)
            shipped = _SHIPPED[(id(self.spark), model_dir)] = Path(archive).name
        return shipped

    def score(self, registry, chunks, job: ScoringJob):
        settings = self.settings
        members = chunk_members(chunks)
        gold_from, silver_from, until = job.windows(settings)
        shipped = self._ship_model(job.model_dir, f"{settings.model.model_name}-{job.model_version}")
        gold = self._with_chunks(self._table(FEATURES, gold_from, until, list(chunks)), chunks)
        silver = self._with_chunks(self._table(BUILDING_HOURLY, silver_from, until, list(chunks)), chunks)

        def core(gold_rows: pa.Table, silver_rows: pa.Table) -> pa.Table:
            from pyspark import SparkFiles

            _on_executor()
            if not gold_rows.num_rows:
                return SCORES.schema.empty_table()
            chunk = int(gold_rows.column("chunk")[0].as_py())
            g = gold_rows.drop(["chunk", "slot"]).to_pandas()[list(FEATURES.schema.names)]
            h = silver_rows.drop(["chunk", "slot"]).to_pandas()[list(BUILDING_HOURLY.schema.names)] if silver_rows.num_rows \
                else BUILDING_HOURLY.schema.empty_table().to_pandas()
            return score_chunk_envelope(g, h, chunk, members[chunk], registry, settings, job,
                                        _unpacked(SparkFiles.get(shipped)))

        return self._run(SCORES, gold, core, {"forecasts": FORECASTS}, (), cogrouped=silver)

    def anomalies(self, chunks, job: AnomalyJob):
        settings = self.settings
        if not self.engine.exists(FEATURES):
            return LocalRunner(self.engine, settings).anomalies({}, job)  # nothing to read: an empty outcome
        features = self._table(FEATURES, job.history_start, job.end, list(chunks)).select(*ANOMALY_FEATURE_COLUMNS)
        if self.engine.exists(FORECASTS):
            forecasts = self._table(FORECASTS, job.start, job.end, list(chunks))
        else:
            forecasts = self.spark.createDataFrame([], schema=_spark_schema(FORECASTS.schema))

        def core(feature_rows: pa.Table, forecast_rows: pa.Table) -> pa.Table:
            _on_executor()
            if not feature_rows.num_rows:
                return ANOMALY_OUT.schema.empty_table()
            chunk = int(feature_rows.column("chunk")[0].as_py())
            f = feature_rows.drop(["chunk", "slot"]).to_pandas()
            fc = forecast_rows.drop(["chunk", "slot"]).to_pandas() if forecast_rows.num_rows else \
                FORECASTS.schema.empty_table().to_pandas()
            return anomalies_chunk_envelope(f, fc, chunk, settings, job)

        return self._run(ANOMALY_OUT, self._with_chunks(features, chunks), core, {"anomalies": ANOMALIES}, ("anomalies",),
                         cogrouped=self._with_chunks(forecasts, chunks))

    def monitor(self, chunks, job):
        """The monitoring check's per-building core in `groupBy("chunk").cogroup(...).applyInArrow` over the
        chunk's features and forecasts; only the `buildings` and `samples` summaries reach the driver."""
        from monitoring.assessment import MONITOR_FEATURE_COLUMNS, MONITOR_FORECAST_COLUMNS, MONITOR_OUT, monitor_chunk_envelope

        settings = self.settings
        if not self.engine.exists(FEATURES) or not chunks:
            return LocalRunner(self.engine, settings).monitor({}, job)  # nothing to read: an empty outcome
        features = self._table(FEATURES, job.read_from, job.end, list(chunks)).select(*MONITOR_FEATURE_COLUMNS)
        if self.engine.exists(FORECASTS):
            forecasts = self._table(FORECASTS, job.read_from, job.end, list(chunks))
        else:
            forecasts = self.spark.createDataFrame([], schema=_spark_schema(FORECASTS.schema))
        forecasts = forecasts.select(*MONITOR_FORECAST_COLUMNS)

        def core(feature_rows: pa.Table, forecast_rows: pa.Table) -> pa.Table:
            _on_executor()
            if not feature_rows.num_rows:
                return MONITOR_OUT.schema.empty_table()
            chunk = int(feature_rows.column("chunk")[0].as_py())
            f = feature_rows.drop(["chunk"]).to_pandas()
            fc = forecast_rows.drop(["chunk"]).to_pandas() if forecast_rows.num_rows else \
                pd.DataFrame({c: pd.Series(dtype=object) for c in MONITOR_FORECAST_COLUMNS})
            return monitor_chunk_envelope(f, fc, chunk, settings, job)

        return self._run(MONITOR_OUT, self._with_chunks(features, chunks), core, {}, ("buildings", "samples"),
                         cogrouped=self._with_chunks(forecasts, chunks))


def spark_hash_long(value: int, seed: int = 42) -> int:
    """Spark's `hash()` of a LongType value (Murmur3_x86_32.hashLong, seed 42): what its HashPartitioning
    takes modulo the partition count to place a row."""
    mask = 0xFFFFFFFF

    def mix_k1(k1: int) -> int:
        k1 = (k1 * 0xCC9E2D51) & mask
        k1 = ((k1 << 15) | (k1 >> 17)) & mask
        return (k1 * 0x1B873593) & mask

    def mix_h1(h1: int, k1: int) -> int:
        h1 ^= k1
        h1 = ((h1 << 13) | (h1 >> 19)) & mask
        return (h1 * 5 + 0xE6546B64) & mask

    value &= 0xFFFFFFFFFFFFFFFF
    h1 = mix_h1(seed & mask, mix_k1(value & mask))
    h1 = mix_h1(h1, mix_k1(value >> 32))
    h1 ^= 8
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & mask
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & mask
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def spread_slots(chunks: list[int], partitions: int) -> dict[int, int]:
    """A grouping key per chunk that Spark's hash partitioning sends to partition `i % partitions` (the
    i-th chunk): grouped by the chunk number itself, two chunks of four can hash into one partition, and
    then one task (one core) runs both while the other core idles."""
    slots: dict[int, int] = {}
    candidate = 0
    for i, chunk in enumerate(chunks):
        while spark_hash_long(candidate) % partitions != i % partitions:
            candidate += 1
        slots[chunk] = candidate
        candidate += 1
    return slots


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


_SHIPPED: dict[tuple[int, str], str] = {}
_UNPACKED: dict[str, str] = {}


def _unpacked(archive: str) -> str:
    """The shipped SavedModel zip unpacked once per Python worker, beside the zip."""
    folder = _UNPACKED.get(archive)
    if folder is None:
        target = Path(archive).with_suffix("")
        if not (target / "saved_model.pb").exists():
            scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=Path(archive).parent))
            shutil.unpack_archive(archive, scratch)
            try:
                scratch.rename(target)  # a concurrent worker may have won: its copy is the same
            except OSError:
                shutil.rmtree(scratch, ignore_errors=True)
        folder = _UNPACKED[archive] = str(target)
    return folder


def _on_executor() -> None:
    from data_quality import checkpoint

    checkpoint.EPHEMERAL = True


def get_runner(engine, settings):
    """The runner `compute.runner` names, over `engine` (the Spark engine when the runner is spark)."""
    return SparkRunner(engine, settings) if settings.compute.runner == "spark" else LocalRunner(engine, settings)
