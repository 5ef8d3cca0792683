"""The promotion gate and the champion stack are pure functions: policy numbers in, typed decision out."""

from __future__ import annotations

from ml.metrics import Accuracy
from ml.registry import AliasEvent, champion_stack, decide_promotion

POLICY = dict(margin=0.02, max_cv_rmse=0.30, max_abs_nmbe=0.10)


def acc(cv_rmse: float, nmbe: float = 0.0, n: int = 100) -> Accuracy:
    return Accuracy(n_hours=n, mae=1.0, rmse=1.0, cv_rmse=cv_rmse, nmbe=nmbe, mape=0.1)


def test_first_model_needs_ashrae_only() -> None:
    d = decide_promotion(acc(0.2), None, challenger_version="1", champion_version=None, **POLICY)
    assert d.promoted and d.champion is None
    d = decide_promotion(acc(0.31), None, challenger_version="1", champion_version=None, **POLICY)
    assert not d.promoted and "CV(RMSE) 0.310 exceeds" in d.reason
    d = decide_promotion(acc(0.2, nmbe=-0.11), None, challenger_version="1", champion_version=None, **POLICY)
    assert not d.promoted and "NMBE" in d.reason


def test_challenger_must_beat_champion_by_the_margin() -> None:
    champion = acc(0.20)
    barely = decide_promotion(acc(0.197), champion, challenger_version="2", champion_version="1", **POLICY)
    assert not barely.promoted and "does not beat champion v1" in barely.reason
    clearly = decide_promotion(acc(0.195), champion, challenger_version="2", champion_version="1", **POLICY)
    assert clearly.promoted
    assert clearly.metrics["champion"]["cv_rmse"] == 0.20 and clearly.metrics["policy"]["margin"] == 0.02


def test_different_hours_are_not_comparable() -> None:
    d = decide_promotion(acc(0.1, n=90), acc(0.2, n=100), challenger_version="2", champion_version="1", **POLICY)
    assert not d.promoted and "not comparable" in d.reason


def _event(seq: int, version: str, action: str) -> AliasEvent:
    return AliasEvent(seq, "t", "champion", version, None, action, "", {}, "me")


def test_champion_stack_pops_on_rollback() -> None:
    events = [_event(1, "1", "promote"), _event(2, "2", "promote"), _event(3, "3", "promote"), _event(4, "2", "rollback")]
    assert champion_stack(events) == ["1", "2"]
    assert champion_stack([*events, _event(5, "1", "rollback")]) == ["1"]
