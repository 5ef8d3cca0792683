"""TF Serving's monitoring metrics, exposed in Prometheus text format under its own names.

TF Serving names metrics like `/tensorflow/serving/request_count` and its Prometheus exporter turns `/` into
`:`, so the series are `:tensorflow:serving:request_count{model_name,status}` and so on. prometheus_client
would append `_total` to counters, so the few series are kept here, each behind its own lock.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict


def _exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


# tensorflow_serving/servables/tensorflow/util.cc: request latency uses ExponentialBuckets(10, 1.8, 33) µs.
LATENCY_BUCKETS_US = _exponential_buckets(10, 1.8, 33)
BATCH_SIZE_BUCKETS = _exponential_buckets(1, 2, 14)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_text, label_names
        self._values: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] += amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        lines += [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...], buckets: list[float]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_text, label_names, buckets
        self._series: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def observe(self, *labels: str, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            series[0][index] += 1
            series[1] += value
            series[2] += 1

    def count(self, *labels: str) -> int:
        series = self._series.get(labels)
        return series[2] if series else 0

    def render(self) -> list[str]:
        lines = [f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, ([*v[0]], v[1], v[2])) for k, v in self._series.items())
        for labels, (counts, total, count) in items:
            cumulative = 0
            for bound, bucket_count in zip(self.buckets, counts):
                cumulative += bucket_count
                lines.append(f'{self.name}_bucket{_labels(self.label_names, labels, f"le={chr(34)}{_number(bound)}{chr(34)}")} {cumulative}')
            lines.append(f'{self.name}_bucket{_labels(self.label_names, labels, "le=" + chr(34) + "+Inf" + chr(34))} {count}')
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {count}")
        return lines


class ServingMetrics:
    def __init__(self) -> None:
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.", ("model_name", "status")
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            LATENCY_BUCKETS_US,
        )
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count", "The number of times a SavedModel was attempted to load.",
            ("model_path", "status"),
        )
        self.load_latency = Histogram(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
            LATENCY_BUCKETS_US,
        )
        self.model_warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            LATENCY_BUCKETS_US,
        )
        self.processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing.",
            ("thread_pool_name",),
            BATCH_SIZE_BUCKETS,
        )
        self._all = [
            self.request_count, self.request_latency, self.runtime_latency, self.load_attempt_count,
            self.load_latency, self.model_warmup_latency, self.processed_batch_size,
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
