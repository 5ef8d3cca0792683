"""The MLflow model registry: register, the promotion gate, alias history, rollback and lineage.

Every new version gets alias `challenger`. Alias `champion` moves only through `promote`/`rollback`,
and every move is appended to the registered model's tags (`alias_event.NNNNNN` = JSON with time, alias,
version, previous version, reason, metrics, actor), so "who was champion when" is answered from the
registry alone, wherever the registry lives. The version gets tags too (`promoted_at`, `promotion_reason`).

The gate itself (`decide_promotion`) is a pure function of the two backtests and the policy numbers.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ml.metrics import Accuracy

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "alias_event."


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    challenger: str  # model version
    champion: str | None  # the champion version the challenger was compared with (None: first model)
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChallengerNotBetter(Exception):
    """The gate kept the champion; `decision` says why, with the figures."""

    def __init__(self, decision: PromotionDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class NoPreviousChampion(LookupError):
    """Rollback asked for, but no earlier champion to go back to."""


@dataclass(frozen=True)
class AliasEvent:
    seq: int
    time: str
    alias: str
    version: str
    previous_version: str | None
    action: str  # register | promote | rollback
    reason: str
    metrics: dict[str, Any]
    actor: str


def decide_promotion(
    challenger: Accuracy,
    champion: Accuracy | None,
    *,
    challenger_version: str,
    champion_version: str | None,
    margin: float,
    max_cv_rmse: float,
    max_abs_nmbe: float,
) -> PromotionDecision:
    """Promote when the challenger meets ASHRAE Guideline 14 and beats the champion's CV(RMSE) by `margin`.

    Both accuracies must come from the same backtest hours (`ml.backtest.backtest` guarantees it).
    """
    metrics: dict[str, Any] = {"challenger": challenger.as_dict() | {"n_hours": challenger.n_hours}}
    if champion is not None:
        metrics["champion"] = champion.as_dict() | {"n_hours": champion.n_hours}
    metrics["policy"] = {"margin": margin, "max_cv_rmse": max_cv_rmse, "max_abs_nmbe": max_abs_nmbe}

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promoted, reason, challenger_version, champion_version, metrics)

    if challenger.n_hours == 0:
        return decision(False, "no backtest hours to judge the challenger on")
    if not challenger.cv_rmse <= max_cv_rmse:
        return decision(False, f"CV(RMSE) {challenger.cv_rmse:.3f} exceeds ASHRAE Guideline 14 limit {max_cv_rmse:.2f}")
    if not abs(challenger.nmbe) <= max_abs_nmbe:
        return decision(False, f"|NMBE| {abs(challenger.nmbe):.3f} exceeds ASHRAE Guideline 14 limit {max_abs_nmbe:.2f}")
    if champion is None:
        return decision(True, f"first model meeting ASHRAE Guideline 14 (CV(RMSE) {challenger.cv_rmse:.3f}, NMBE {challenger.nmbe:+.3f})")
    if challenger.n_hours != champion.n_hours:
        return decision(False, f"backtests differ in hours ({challenger.n_hours} vs {champion.n_hours}): not comparable")
    required = champion.cv_rmse * (1.0 - margin)
    if challenger.cv_rmse <= required:
        return decision(
            True,
            f"CV(RMSE) {challenger.cv_rmse:.4f} beats champion v{champion_version} {champion.cv_rmse:.4f} by more than {margin:.0%}",
        )
    return decision(
        False,
        f"CV(RMSE) {challenger.cv_rmse:.4f} does not beat champion v{champion_version} {champion.cv_rmse:.4f} by {margin:.0%} (needs ≤ {required:.4f})",
    )


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user in some containers
        return "unknown"


def alias_version(model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def history(model_name: str) -> list[AliasEvent]:
    """Every alias move of the registered model, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = _client().get_registered_model(model_name).tags
    except MlflowException:
        return []
    events = []
    for key, value in tags.items():
        if key.startswith(EVENT_PREFIX):
            raw = json.loads(value)
            events.append(AliasEvent(seq=int(key.removeprefix(EVENT_PREFIX)), **raw))
    return sorted(events, key=lambda e: e.seq)


def _record(model_name: str, alias: str, version: str, action: str, reason: str, metrics: dict[str, Any]) -> AliasEvent:
    client = _client()
    previous = alias_version(model_name, alias)
    client.set_registered_model_alias(model_name, alias, version)
    events = history(model_name)
    seq = (events[-1].seq + 1) if events else 1
    event = AliasEvent(seq, _now(), alias, version, previous, action, reason, metrics, _actor())
    payload = {k: v for k, v in asdict(event).items() if k != "seq"}
    client.set_registered_model_tag(model_name, f"{EVENT_PREFIX}{seq:06d}", json.dumps(payload, sort_keys=True, default=str))
    if alias == CHAMPION:
        client.set_model_version_tag(model_name, version, "promoted_at", event.time)
        client.set_model_version_tag(model_name, version, "promotion_reason", reason[:4000])
    return event


def register(model_uri: str, model_name: str, run_id: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model as a new version with alias `challenger`; returns the version."""
    import mlflow

    version = mlflow.register_model(model_uri, model_name, tags={"run_id": run_id, **(tags or {})})
    _record(model_name, CHALLENGER, str(version.version), "register", "new version registered", {})
    return str(version.version)


def promote(model_name: str, decision: PromotionDecision) -> AliasEvent | None:
    """Move `champion` to the challenger when the decision says so; record the decision on the version either way."""
    client = _client()
    client.set_model_version_tag(model_name, decision.challenger, "gate_decision", json.dumps(decision.as_dict(), default=str)[:4900])
    if not decision.promoted:
        return None
    return _record(model_name, CHAMPION, decision.challenger, "promote", decision.reason, decision.metrics)


def promote_or_raise(model_name: str, decision: PromotionDecision) -> AliasEvent:
    event = promote(model_name, decision)
    if event is None:
        raise ChallengerNotBetter(decision)
    return event


def champion_stack(events: list[AliasEvent]) -> list[str]:
    """Champions in the order they reigned, with rolled-back ones removed (the last is the current)."""
    stack: list[str] = []
    for event in events:
        if event.alias != CHAMPION:
            continue
        if event.action == "rollback":
            while stack and stack[-1] != event.version:
                stack.pop()
            if not stack:
                stack.append(event.version)
        else:
            stack.append(event.version)
    return stack


def rollback(model_name: str, reason: str = "manual rollback") -> AliasEvent:
    """Move `champion` back to the version that was champion before the current one."""
    stack = champion_stack(history(model_name))
    current = alias_version(model_name, CHAMPION)
    if len(stack) < 2 or current is None:
        raise NoPreviousChampion(f"model {model_name!r} has no earlier champion to roll back to (champions so far: {stack})")
    target = stack[-2]
    return _record(model_name, CHAMPION, target, "rollback", f"{reason}: v{current} -> v{target}", {"from_version": current})


def _version_run(model_name: str, version: str | int):
    """The MLflow run that produced a registered version (its run_id, or the tag older versions carry)."""
    client = _client()
    model_version = client.get_model_version(model_name, str(version))
    return client.get_run(model_version.run_id or model_version.tags.get("run_id"))


def lineage(model_name: str, version: str | int) -> dict[str, Any]:
    """From a registered version back to the exact Delta table version it was trained on."""
    from ml.tracking import TAG_DELTA_VERSION, TAG_TABLE_NAME, TAG_TABLE_URI

    run = _version_run(model_name, version)
    run_id = run.info.run_id
    raw_version = run.data.tags.get(TAG_DELTA_VERSION, "")
    return {
        "model": model_name,
        "version": str(version),
        "run_id": run_id,
        "table": run.data.tags.get(TAG_TABLE_URI),
        "table_name": run.data.tags.get(TAG_TABLE_NAME),
        "delta_version": int(raw_version) if raw_version != "" else None,
        "git_commit": run.data.tags.get("mlflow.source.git.commit"),
        "train_start": run.data.tags.get("wattflow.train_start"),
        "train_end": run.data.tags.get("wattflow.train_end"),
    }


def training_params_of(model_name: str, version: str | int) -> dict[str, Any]:
    """The hyperparameters a registered version was trained with: ModelParams fields and lookback_h, typed."""
    from dataclasses import fields

    from ml.model import ModelParams

    logged = _version_run(model_name, version).data.params
    defaults = ModelParams()
    out: dict[str, Any] = {}
    for f in fields(ModelParams):
        if f.name in logged and f.name != "extra":
            out[f.name] = type(getattr(defaults, f.name))(logged[f.name])
    if "lookback_h" in logged:
        out["lookback_h"] = int(logged["lookback_h"])
    return out


def window_spec_of(model_name: str, version: str | int):
    """The WindowSpec a registered version was trained with."""
    from ml.spec import WindowSpec
    from ml.tracking import TAG_WINDOW_SPEC

    return WindowSpec.from_json(_version_run(model_name, version).data.tags[TAG_WINDOW_SPEC])


def load_keras(model_name: str, version_or_alias: str):
    """The registered Keras serving model (inputs `history`/`future`, outputs in kWh)."""
    import mlflow

    import ml.model  # noqa: F401 - registers the custom layers the saved model names

    ref = f"@{version_or_alias}" if not str(version_or_alias).isdigit() else f"/{version_or_alias}"
    return mlflow.keras.load_model(f"models:/{model_name}{ref}")
