"""Every event and row SentryML exchanges, one frozen pydantic model each.

Events travel as JSON on Kafka. Each carries a stable, versioned ``type`` tag
(``"sentryml.inference_log.v1"``) that never depends on a Python module path, so producers
in other languages can validate against the exported JSON Schemas in ``schemas/json/``.

>>> log = InferenceLog(request_id="r1", base_model="smollm2-135m", prompt="hi", completion="hello")
>>> decode_event(log.to_bytes(), InferenceLog).request_id
'r1'
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.exceptions import InvalidEvent

#: Default largest accepted serialized event (bytes). Configurable per deployable.
DEFAULT_MAX_EVENT_BYTES = 1_048_576
#: How far in the future an event timestamp may lie (clock skew between hosts).
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)

NonEmptyId = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
MetaValue = str | int | float | bool | None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every SentryML event: frozen, strict about unknown fields, no NaN/inf."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    TYPE_TAG: ClassVar[str] = ""

    def to_bytes(self) -> bytes:
        """Serialize to compact UTF-8 JSON (the wire format)."""
        return self.model_dump_json(exclude_none=False).encode()

    def to_row(self) -> dict[str, Any]:
        """A flat dict for the store; nested values become JSON strings."""
        row = self.model_dump(mode="python")
        row.pop("type", None)
        for key, value in row.items():
            if isinstance(value, dict | list):
                row[key] = json.dumps(value, sort_keys=True)
        return row


class _TimestampedEvent(Event):
    ts: datetime = Field(default_factory=utcnow, description="Event time, UTC.")

    @field_validator("ts")
    @classmethod
    def _ts_is_sane(cls, value: datetime, info: ValidationInfo) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 has no UTC datetime
            raise ValueError(f"timestamp {value.isoformat()} is out of range in UTC") from exc
        ctx = info.context or {}
        now = ctx.get("now") or utcnow()
        skew = ctx.get("max_future_skew") or DEFAULT_MAX_FUTURE_SKEW
        if value > now + skew:
            raise ValueError(
                f"timestamp {value.isoformat()} is more than {skew} in the future "
                "(check the producer's clock)"
            )
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class InferenceLog(_TimestampedEvent):
    """One request to the monitored model, as the inference service saw it."""

    TYPE_TAG: ClassVar[str] = "sentryml.inference_log.v1"
    type: Literal["sentryml.inference_log.v1"] = "sentryml.inference_log.v1"

    request_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = Field("none", max_length=256, description="'none' = base model only")
    prompt: str | None = Field(None, description="Plain prompt; or give `messages`.")
    messages: list[ChatMessage] | None = Field(None, description="Chat turns sent to the model.")
    completion: str
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    latency_ms: float | None = Field(None, ge=0)
    app: str | None = Field(None, max_length=256)
    tenant: str | None = Field(None, max_length=256)
    metadata: dict[str, MetaValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_prompt(self) -> InferenceLog:
        if self.prompt is None and not self.messages:
            raise ValueError("one of `prompt` or `messages` is required")
        return self

    @property
    def prompt_text(self) -> str:
        """The user-facing input as one string (the last user turn for chats)."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages  # guaranteed by _has_prompt
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].content


class PreferencePair(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chosen: str
    rejected: str


class Feedback(_TimestampedEvent):
    """A label on a logged request: a verdict, a corrected completion, or a preference."""

    TYPE_TAG: ClassVar[str] = "sentryml.feedback.v1"
    type: Literal["sentryml.feedback.v1"] = "sentryml.feedback.v1"

    request_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = "none"
    label: Literal["good", "bad"] | None = None
    correction: str | None = Field(None, description="What the model should have answered.")
    preference: PreferencePair | None = None
    prompt: str | None = Field(None, description="Prompt, when the app has it at hand.")
    reviewer: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Feedback:
        if self.label is None and self.correction is None and self.preference is None:
            raise ValueError("feedback needs a `label`, a `correction` or a `preference`")
        return self


JudgeDimension = Literal["format", "factual", "refusal"]


class JudgeScore(_TimestampedEvent):
    """One judge verdict on one sampled completion, for one dimension."""

    TYPE_TAG: ClassVar[str] = "sentryml.judge_score.v1"
    type: Literal["sentryml.judge_score.v1"] = "sentryml.judge_score.v1"

    request_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = "none"
    judge_model: str
    dimension: JudgeDimension
    score: int | None = Field(None, ge=0, le=5, description="1–5; refusal is 0/1; None = failure")
    ok: bool = Field(True, description="False when the judge failed to give a usable answer.")
    rationale: str = ""
    schema_valid: bool | None = Field(None, description="Deterministic JSON-schema check result.")
    injection_flag: bool = False
    latency_ms: float = Field(0.0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)
    error: str | None = None

    @model_validator(mode="after")
    def _score_in_range(self) -> JudgeScore:
        if self.ok and self.score is None:
            raise ValueError("an ok judge score needs `score`")
        if self.score is not None:
            lo, hi = (0, 1) if self.dimension == "refusal" else (1, 5)
            if not lo <= self.score <= hi:
                raise ValueError(f"{self.dimension} score must be in [{lo}, {hi}]")
        return self


Severity = Literal["info", "warn", "alert", "page"]


class Alert(_TimestampedEvent):
    """Something an operator should know: drift, a judge drop, a failing golden set."""

    TYPE_TAG: ClassVar[str] = "sentryml.alert.v1"
    type: Literal["sentryml.alert.v1"] = "sentryml.alert.v1"

    alert_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = "none"
    kind: str = Field(..., description="embedding_drift, output_drift, judge_drop, golden, ...")
    feature: str = ""
    window: str = ""
    severity: Severity
    value: float = 0.0
    threshold: float = 0.0
    p_value: float | None = None
    sample_size: int = Field(0, ge=0)
    message: str
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="What changed (drift: grown/shrunk bins, share, keywords, examples).",
    )
    incident_id: str = Field("", description="The incident this notification belongs to.")
    incident_state: Literal["", "open", "escalated", "updated", "resolved"] = ""


RetrainMethod = Literal["lora", "qlora", "dpo"]
TaskGoal = Literal["style", "vocabulary", "task", "instruction"]


class RetrainRequest(_TimestampedEvent):
    """Ask the trainer for a new adapter."""

    TYPE_TAG: ClassVar[str] = "sentryml.retrain_request.v1"
    type: Literal["sentryml.retrain_request.v1"] = "sentryml.retrain_request.v1"

    job_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = Field("none", description="The incumbent adapter.")
    method: RetrainMethod = "lora"
    task_goal: TaskGoal = "style"
    reason: str = ""
    forced: bool = False
    requested_by: str = "retrain-gate"


AdapterStatus = Literal["trained", "rejected", "promoted", "deployed", "rolled_back", "failed"]


class AdapterEvent(_TimestampedEvent):
    """A change in an adapter's life: trained, rejected, promoted, deployed, rolled back."""

    TYPE_TAG: ClassVar[str] = "sentryml.adapter_event.v1"
    type: Literal["sentryml.adapter_event.v1"] = "sentryml.adapter_event.v1"

    base_model: ModelName
    adapter_version: str
    parent_version: str = "none"
    status: AdapterStatus
    job_id: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    message: str = ""
    # Set on ``deployed``: what clients request (``model``), where, and the digest of the
    # file the server loaded (a converted GGUF LoRA for llama.cpp; for vLLM the PEFT
    # weights, the same as ``sha256``).
    served_model: str | None = None
    endpoint: str | None = None
    served_sha256: str | None = None


GoldenTrigger = Literal["manual", "deploy", "daily", "trainer", "ci"]


class GoldenRun(_TimestampedEvent):
    """Summary of one golden-set run against a live model."""

    TYPE_TAG: ClassVar[str] = "sentryml.golden_run.v1"
    type: Literal["sentryml.golden_run.v1"] = "sentryml.golden_run.v1"

    run_id: NonEmptyId
    base_model: ModelName
    adapter_version: str = "none"
    golden_set: str
    trigger: GoldenTrigger = "manual"
    total: int = Field(..., ge=0)
    passed: int = Field(..., ge=0)
    pass_rate: float = Field(..., ge=0, le=1)
    threshold: float = Field(..., ge=0, le=1)
    tag_pass_rates: dict[str, float] = Field(default_factory=dict)
    failed_case_ids: list[str] = Field(default_factory=list)


DriftWindow = Literal["1h", "24h", "7d"]
#: Every drift window, shortest first (the evaluator, the report, incidents and the gate).
DRIFT_WINDOWS: tuple[DriftWindow, ...] = get_args(DriftWindow)
DriftStatus = Literal["ok", "warn", "alert", "insufficient"]


class WindowCount(Event):
    """A partial count: events of one model in one minute that fell in one bin of a feature."""

    TYPE_TAG: ClassVar[str] = "sentryml.window_count.v1"
    type: Literal["sentryml.window_count.v1"] = "sentryml.window_count.v1"

    base_model: ModelName
    adapter_version: str
    baseline_id: str
    feature: str
    bucket: datetime
    bin: int = Field(..., ge=0)
    count: int = Field(..., ge=0)


class DriftStat(_TimestampedEvent):
    """One drift evaluation of one feature over one rolling window."""

    TYPE_TAG: ClassVar[str] = "sentryml.drift_stat.v1"
    type: Literal["sentryml.drift_stat.v1"] = "sentryml.drift_stat.v1"

    base_model: ModelName
    adapter_version: str
    baseline_id: str
    feature: str
    window: DriftWindow
    psi: float = Field(..., ge=0)
    jsd: float = Field(..., ge=0, le=1)
    chi2: float = Field(..., ge=0)
    p_value: float = Field(..., ge=0, le=1)
    sample_size: int = Field(..., ge=0)
    baseline_size: int = Field(..., ge=0)
    psi_warn: float
    psi_alert: float
    status: DriftStatus
    p_adjusted: float | None = Field(
        None, ge=0, le=1, description="p_value Holm-adjusted over the whole evaluation."
    )
    share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="novelty: estimated share of traffic unlike the training data.",
    )
    share_low: float | None = Field(None, ge=0, le=1)
    share_high: float | None = Field(None, ge=0, le=1)


#: Every event type by its wire tag. A new event must be added here (a test checks it).
EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE_TAG: cls
    for cls in (
        InferenceLog,
        Feedback,
        JudgeScore,
        Alert,
        RetrainRequest,
        AdapterEvent,
        GoldenRun,
        WindowCount,
        DriftStat,
    )
}

E = TypeVar("E", bound=Event)


def _reject_non_finite(value: str) -> float:
    raise ValueError(f"non-finite number {value!r} is not valid JSON")


def decode_event(
    raw: bytes | str,
    expected: type[E],
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    now: datetime | None = None,
    max_future_skew: timedelta | None = None,
) -> E:
    """Parse and validate one wire event; raise :class:`InvalidEvent` naming the problem.

    >>> decode_event(b'{"request_id": "r1"}', InferenceLog)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    schemas.exceptions.InvalidEvent: invalid sentryml.inference_log.v1: base_model: Field required...
    """
    size = len(raw)
    if size > max_bytes:
        raise InvalidEvent(f"event is {size} bytes, over the {max_bytes}-byte limit", reason="size")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"event is not valid UTF-8: {exc}", reason="encoding") from exc
    else:
        text = raw
    try:
        data = json.loads(text, parse_constant=_reject_non_finite)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"event is not valid JSON: {exc}", reason="json") from exc
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"event must be a JSON object, got {type(data).__name__}", reason="schema"
        )
    tag = data.get("type", expected.TYPE_TAG)
    if tag != expected.TYPE_TAG:
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidEvent(
            f"unknown or unexpected event type {tag!r}; expected {expected.TYPE_TAG!r} "
            f"(known: {known})",
            reason="type_tag",
        )
    context = {"now": now, "max_future_skew": max_future_skew}
    try:
        return expected.model_validate(data, context=context)
    except ValidationError as exc:
        reason = "timestamp" if any(e["loc"] == ("ts",) for e in exc.errors()) else "schema"
        raise InvalidEvent(f"invalid {expected.TYPE_TAG}: {_describe(exc)}", reason=reason) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<event>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


#: New labelled examples a retrain needs per declared task goal (the low ends of the usual
#: ranges: style/format 200–500, vocabulary 500–1.5k, task 1k–5k, instruction 2k–10k).
DEFAULT_MIN_EXAMPLES: dict[str, int] = {
    "style": 200,
    "vocabulary": 500,
    "task": 1000,
    "instruction": 2000,
}
