"""The golden-set file format: cases, their checks, sets, and the JSONL/YAML parser.

A golden set is a JSONL file (one case per line) or a YAML file (a list of cases, or a
mapping with ``name``, ``system`` and ``cases``). ``schemas/json/golden_case.schema.json``
is the schema (:func:`render_json_schemas`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.events import ChatMessage
from workers.golden._errors import InvalidGoldenSet

CaseId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:/-]+$")
]


#: A string or a list of strings in the file; always a list in the model.
OneOrMany = Annotated[
    list[str],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JudgeCheck(_Model):
    """Score the output with the LLM judge against a rubric; pass at ``threshold`` or above."""

    rubric: str = Field(..., min_length=1, description="What a good answer does, for the judge.")
    threshold: float = Field(
        4.0, ge=1, le=5, description="Lowest passing judge score on the 1–5 scale."
    )


class Checks(_Model):
    """What the output must satisfy. At least one check; all must pass."""

    exact: bool = Field(
        False, description="Output equals `expected` (leading/trailing whitespace ignored)."
    )
    contains: OneOrMany = Field(
        default_factory=list, description="Substrings that must all appear (case-insensitive)."
    )
    regex: OneOrMany = Field(
        default_factory=list,
        description="Python regular expressions that must all match somewhere (re.search); "
        "use inline flags such as (?i) or (?s).",
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="The whole output must parse as JSON and validate against this schema."
    )
    refusal: bool | None = Field(
        None, description="true: the model must refuse; false: it must not refuse."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="The output must be at most this many tokens long."
    )
    judge: JudgeCheck | None = Field(None, description="Rubric scored by the LLM judge.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return schema

    @model_validator(mode="after")
    def _at_least_one(self) -> Checks:
        if not self.names():
            raise ValueError(
                "a case needs at least one check: exact, contains, regex, json_schema, "
                "refusal, max_tokens or judge"
            )
        return self

    def names(self) -> list[str]:
        """The checks this case uses, in evaluation order."""
        active = {
            "exact": self.exact,
            "contains": bool(self.contains),
            "regex": bool(self.regex),
            "json_schema": self.json_schema is not None,
            "refusal": self.refusal is not None,
            "max_tokens": self.max_tokens is not None,
            "judge": self.judge is not None,
        }
        return [name for name, on in active.items() if on]


class GoldenCase(_Model):
    """One golden case: an input, an optional reference answer, checks and tags."""

    id: CaseId = Field(..., description="Unique within the set; letters, digits, _.:/-")
    prompt: str | None = Field(None, description="A single user turn; or give `messages`.")
    messages: list[ChatMessage] | None = Field(None, description="Chat turns sent as-is.")
    system: str | None = Field(
        None, description="System prompt; defaults to the set's `system` (YAML sets)."
    )
    expected: str | None = Field(
        None, description="Reference answer: used by `exact`, shown in diffs, given to the judge."
    )
    tags: list[str] = Field(default_factory=list, description="format, safety, domain, ...")
    checks: Checks

    @model_validator(mode="after")
    def _consistent(self) -> GoldenCase:
        if (self.prompt is None) == (not self.messages):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.messages and self.messages[-1].role != "user":
            raise ValueError("`messages` must end with a user turn (the model answers it)")
        if self.checks.exact and self.expected is None:
            raise ValueError("the `exact` check needs `expected`")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The messages to send: the system prompt (unless the chat has one), then the turns."""
        turns = (
            [{"role": m.role, "content": m.content} for m in self.messages]
            if self.messages
            else [{"role": "user", "content": self.prompt or ""}]
        )
        if self.system and not any(t["role"] == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": self.system})
        return turns

    @property
    def user_text(self) -> str:
        """The last user turn (what a judge is told the user asked)."""
        if self.prompt is not None:
            return self.prompt
        return next(m.content for m in reversed(self.messages or []) if m.role == "user")


class GoldenSet(_Model):
    """A named list of cases with unique ids; ``system`` is the default system prompt."""

    name: str = Field(..., min_length=1, max_length=256)
    system: str | None = None
    cases: list[GoldenCase] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> GoldenSet:
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise ValueError(f"duplicate case id {case.id!r}")
            seen.add(case.id)
        return self

    def tags(self) -> dict[str, int]:
        """Number of cases per tag."""
        counts: dict[str, int] = {}
        for case in self.cases:
            for tag in case.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items()))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _case(raw: Any, *, source: str, where: str, system: str | None) -> GoldenCase:
    if not isinstance(raw, dict):
        raise InvalidGoldenSet(
            f"{source} {where}: a case must be a mapping, got {type(raw).__name__}"
        )
    label = f"case {raw['id']!r} ({where})" if isinstance(raw.get("id"), str) else where
    if system is not None and "system" not in raw:
        raw = {**raw, "system": system}
    try:
        return GoldenCase.model_validate(raw)
    except ValidationError as exc:
        raise InvalidGoldenSet(f"{source}: {label}: {_describe(exc)}") from exc


def _yaml_case_lines(text: str) -> list[int]:
    """1-based line of each case in a YAML set (from the node tree, not the parsed data)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "cases"), None)
    if isinstance(node, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in node.value]
    return []


def parse_golden_set(
    text: str, *, fmt: Literal["jsonl", "yaml"], name: str, source: str = "<golden set>"
) -> GoldenSet:
    """Parse golden-set text; :class:`InvalidGoldenSet` names the line, case id and field.

    >>> try:
    ...     parse_golden_set('{"id": "a", "prompt": "hi", "checks": {}}', fmt="jsonl", name="x")
    ... except InvalidGoldenSet as exc:
    ...     print(exc)
    <golden set>: case 'a' (line 1): checks: a case needs at least one check: exact, contains, regex, json_schema, refusal, max_tokens or judge
    """
    system: str | None = None
    cases: list[GoldenCase] = []
    if fmt == "jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise InvalidGoldenSet(f"{source}: line {lineno}: not valid JSON: {exc}") from exc
            cases.append(_case(raw, source=source, where=f"line {lineno}", system=None))
    elif fmt == "yaml":
        try:
            data = yaml.safe_load(text)
            lines = _yaml_case_lines(text)
        except yaml.YAMLError as exc:
            raise InvalidGoldenSet(f"{source}: not valid YAML: {exc}") from exc
        if isinstance(data, dict):
            unknown = set(data) - {"name", "system", "cases"}
            if unknown:
                raise InvalidGoldenSet(
                    f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                    "allowed: name, system, cases"
                )
            name = str(data.get("name") or name)
            system = data.get("system")
            if system is not None and not isinstance(system, str):
                raise InvalidGoldenSet(f"{source}: `system` must be a string")
            data = data.get("cases")
        if not isinstance(data, list):
            raise InvalidGoldenSet(
                f"{source}: expected a list of cases or a mapping with `cases`, "
                f"got {type(data).__name__}"
            )
        for index, raw in enumerate(data):
            where = f"line {lines[index]}" if index < len(lines) else f"case #{index + 1}"
            cases.append(_case(raw, source=source, where=where, system=system))
    else:
        raise ValueError(f"fmt must be 'jsonl' or 'yaml', got {fmt!r}")
    if not cases:
        raise InvalidGoldenSet(f"{source}: no cases")
    try:
        return GoldenSet(name=name, system=system, cases=cases)
    except ValidationError as exc:
        raise InvalidGoldenSet(f"{source}: {_describe(exc)}") from exc


def load_golden_set(path: str | Path) -> GoldenSet:
    """Load a ``.jsonl`` or ``.yaml``/``.yml`` golden set; its name defaults to the file stem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        fmt: Literal["jsonl", "yaml"] = "jsonl"
    elif suffix in (".yaml", ".yml"):
        fmt = "yaml"
    else:
        raise InvalidGoldenSet(f"{path}: golden sets are .jsonl, .yaml or .yml files")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidGoldenSet(f"cannot read golden set {path}: {exc}") from exc
    return parse_golden_set(text, fmt=fmt, name=path.stem, source=str(path))


def render_json_schemas() -> dict[str, str]:
    """``{file name: JSON text}`` of the golden-set JSON Schemas (committed in schemas/json)."""
    out = {}
    for file_name, model in (
        ("golden_case.schema.json", GoldenCase),
        ("golden_set.schema.json", GoldenSet),
    ):
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://sentryml.dev/schemas/{file_name}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[file_name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out
