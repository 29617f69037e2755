"""The workflows file: what each workflow is, how often it runs, and who (if anyone) waits on it.

Read with pyyaml, checked with pydantic; every problem becomes a `PlanFileError` naming the file, the line and the
workflow, never a traceback.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from freight.domain import FreightError


class PlanFileError(FreightError):
    """A workflows file that cannot be read or does not describe valid workflows."""


class Mode(StrEnum):
    SYNC = "sync"
    BATCH = "batch"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def per_month(self) -> float:
        # A month is taken as 30 days: round numbers a reader can check by hand beat calendar precision here.
        return {Period.DAY: 30.0, Period.WEEK: 30.0 / 7.0, Period.MONTH: 1.0}[self]


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)?\s*$")
_UNIT = {"m": 1 / 60, "min": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """`30h`, `90m`, `2d`, `1w`, or a bare number of hours, as a timedelta."""
    if isinstance(value, timedelta) or value is None:
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30h, 90m, 2d or 1w")
    if isinstance(value, int | float):
        return timedelta(hours=float(value))
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: write it like 30h, 90m, 2d or 1w")
    return timedelta(hours=float(match.group(1)) * _UNIT[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Workflow(_Strict):
    """One recurring piece of LLM work, as much as routing and pricing need to know about it."""

    name: str = Field(min_length=1)
    description: str = ""
    model: str = Field(min_length=1)
    # Someone is blocked until the result arrives: a pre-merge check, a user-facing request.
    blocking: bool = False
    # The model calls tools and reads their results over several turns; a batch request is one turn.
    tool_calling: bool = False
    # Each result decides the next request, so the requests cannot all be known up front.
    iterative: bool = False
    requests_per_run: int = Field(default=1, ge=0)
    runs_per_period: float = Field(default=1.0, ge=0)
    period: Period = Period.MONTH
    # How long the result may take, from the moment the work is ready (the latency the people downstream can bear).
    sla: Duration | None = None
    # A one-off absolute deadline; what `freight run --mode auto` passes for a job.
    deadline: datetime | None = None
    avg_input_tokens: int = Field(default=0, ge=0)
    avg_output_tokens: int = Field(default=0, ge=0)
    avg_cache_write_tokens: int = Field(default=0, ge=0)
    avg_cache_read_tokens: int = Field(default=0, ge=0)
    # How it runs today; a proposal moves workflows from this mode to batch.
    current_mode: Mode = Mode.SYNC
    # Share of requests that pass validation the first time, for the retry projection.
    first_pass_rate: float | None = Field(default=None, ge=0, le=1)
    # What `freight schedule` runs (`freight plan` reads and ignores them): the documents arriving in a folder or
    # matching a glob, the prompt, system prompt and JSON Schema files (paths relative to the workflows file), and
    # where to send them.
    input: str | None = None
    prompt: str | None = None
    system: str | None = None
    schema_path: str | None = Field(default=None, alias="schema")
    provider: str = "anthropic"
    base_url: str | None = None
    max_tokens: int = Field(default=1024, ge=1)

    @field_validator("sla")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError("the SLA must be longer than zero")
        return v

    @property
    def runs_per_month(self) -> float:
        return self.runs_per_period * self.period.per_month


class Proposal(_Strict):
    """Somebody's plan to move workflows to batch, to be judged move by move."""

    title: str = "move everything to batch"
    move_to_batch: Literal["all"] | list[str] = "all"


class Settings(_Strict):
    """Routing knobs a file may set; command-line options win over them."""

    min_batch_requests: int | None = Field(default=None, ge=0)
    safety_margin: Duration | None = None


class WorkflowFile(_Strict):
    workflows: list[Workflow] = Field(min_length=1)
    proposal: Proposal | None = None
    settings: Settings = Field(default_factory=Settings)

    @field_validator("workflows")
    @classmethod
    def _unique_names(cls, v: list[Workflow]) -> list[Workflow]:
        seen: set[str] = set()
        for w in v:
            if w.name in seen:
                raise ValueError(f"two workflows are named {w.name!r}: names must be unique")
            seen.add(w.name)
        return v

    @model_validator(mode="after")
    def _proposal_names_known(self) -> WorkflowFile:
        if self.proposal is not None and self.proposal.move_to_batch != "all":
            known = {w.name for w in self.workflows}
            unknown = [n for n in self.proposal.move_to_batch if n not in known]
            if unknown:
                raise ValueError(f"proposal.move_to_batch names no such workflow: {', '.join(map(repr, unknown))}")
        return self

    def proposed_moves(self) -> list[str]:
        if self.proposal is None:
            return []
        if self.proposal.move_to_batch == "all":
            return [w.name for w in self.workflows]
        return list(self.proposal.move_to_batch)


def _workflow_lines(text: str) -> list[int]:
    """The 1-based line where each entry of `workflows:` starts, for error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "workflows" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _describe(loc: tuple[int | str, ...], data: Any, lines: list[int], path: str) -> str:
    """`FILE:LINE: workflow 'name' (#2), field requests_per_run` for a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "workflows" and isinstance(loc[1], int):
        index = loc[1]
        line = f":{lines[index]}" if index < len(lines) else ""
        entry = data["workflows"][index] if index < len(data.get("workflows", [])) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        who = f"workflow {name!r} (#{index + 1})" if name else f"workflow #{index + 1}"
        field = ".".join(str(p) for p in loc[2:])
        return f"{path}{line}: {who}" + (f", field {field}" if field else "")
    return f"{path}: " + (".".join(str(p) for p in loc) or "top level")


def parse_workflows(text: str, path: str) -> WorkflowFile:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanFileError(f"{where}: not valid YAML ({problem}). Fix the file and run freight plan again.") from None
    if not isinstance(data, dict) or "workflows" not in data:
        raise PlanFileError(
            f"{path}: expected a mapping with a 'workflows:' list (see examples/workflows.yaml for the shape)."
        )
    try:
        return WorkflowFile.model_validate(data)
    except ValidationError as exc:
        lines = _workflow_lines(text)
        problems = [f"{_describe(tuple(e['loc']), data, lines, path)}: {e['msg']}" for e in exc.errors()]
        raise PlanFileError(
            "\n".join(problems)
            + "\nFix the file and run freight plan again (examples/workflows.yaml shows every field)."
        ) from None


def load_workflows(path: Path) -> WorkflowFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read the workflows file ({exc.strerror}).") from None
    return parse_workflows(text, str(path))
