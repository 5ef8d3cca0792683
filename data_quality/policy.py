"""What happens when an expectation fails: reject the rows, warn, or fail the batch.

The decision is typed: `BatchRejected` names the expectation, what was observed and the threshold, so
orchestration reacts to the exception type and people read the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Policy = Literal["reject", "warn", "fail"]


@dataclass(frozen=True)
class QualityResult:
    """One expectation's outcome on one batch: a row of `monitoring.quality_results`."""

    suite: str
    batch: str
    expectation: str
    success: bool
    observed_value: str
    threshold: str
    unexpected_count: int
    element_count: int
    policy: Policy

    def as_row(self) -> dict:
        return {
            "suite": self.suite,
            "batch": self.batch,
            "expectation": self.expectation,
            "success": self.success,
            "observed_value": self.observed_value,
            "threshold": self.threshold,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "policy": self.policy,
        }


class BatchRejected(RuntimeError):
    """A `fail`-policy expectation did not hold: the batch stops here and nothing of it is written."""

    def __init__(self, suite: str, batch: str, expectation: str, observed_value: str, threshold: str, results=()) -> None:
        self.suite = suite
        self.batch = batch
        self.expectation = expectation
        self.observed_value = observed_value
        self.threshold = threshold
        self.results = list(results)
        super().__init__(
            f"batch {batch!r} rejected by {suite}: expectation {expectation!r} observed {observed_value}, "
            f"threshold {threshold}"
        )


def policy_for(name: str, quality) -> Policy:
    """The configured policy of an expectation (`settings.quality.policies`, else the default)."""
    return quality.policies.get(name, quality.default_policy)


def raise_on_failures(results: list[QualityResult]) -> None:
    """Raise `BatchRejected` for the first failed expectation whose policy is `fail`."""
    for r in results:
        if not r.success and r.policy == "fail":
            raise BatchRejected(r.suite, r.batch, r.expectation, r.observed_value, r.threshold, results)
