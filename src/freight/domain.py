"""Provider-neutral types: what a request is, how it ended, and the state machines around it.

Pure data, no I/O. Every other layer (store, providers, server, runner, plan) speaks these types, so a provider's
wire format never leaks past its adapter and the store never sees an SDK object.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The strictest rule of the four providers (Anthropic's): an id that passes here passes everywhere.
CUSTOM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)


class ExitCode:
    """The exit codes every command uses; the README lists them. One table: the CLI, the library and the tests agree."""

    OK = 0
    FAILED = (
        1  # the job ran but stopped: the sample gate, or documents left failed where the user asked to fail on them
    )
    USAGE = 2  # a mistake caught before anything was sent: a flag, a file, a line, a schema, a store URL
    HELD = 3  # another runner holds the job's lease (a second terminal, an overlapping cron)
    STOPPED = 4  # the provider refused in a way that cannot heal (auth, not found, a batch-level invalid request)
    INTERRUPTED = 130  # Ctrl-C: the job is saved and `freight resume JOB` carries on


class FreightError(Exception):
    """An error meant for a user: its message says what went wrong and what to do next."""

    exit_code: int = ExitCode.FAILED


class UsageError(FreightError):
    """A mistake found before anything was sent (input, flag, schema, prompt, store URL)."""

    exit_code = ExitCode.USAGE


class JobHeld(FreightError):
    """Another live runner holds this job's lease; its message says who (host, pid, since when)."""

    exit_code = ExitCode.HELD


class JobStopped(FreightError):
    """The job was stopped by an error that cannot heal; the job is saved and its state is `stopped`."""

    exit_code = ExitCode.STOPPED


class IllegalTransition(FreightError):
    """A state change that the state machine does not allow."""


def check_custom_id(custom_id: str) -> str:
    if not _CUSTOM_ID_RE.fullmatch(custom_id):
        raise ValueError(f"custom_id {custom_id!r} is invalid: use 1-64 characters of letters, digits, '_' and '-'")
    return custom_id


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- requests ---------------------------------------------------------------------------------------------------


class Message(_Model):
    role: Literal["user", "assistant"]
    # A plain string, or a list of content blocks in Anthropic's shape (text, tool_use, tool_result).
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")

    def has_tool_turn(self) -> bool:
        if isinstance(self.content, str):
            return False
        return any(b.get("type") in ("tool_use", "tool_result") for b in self.content)


# The APIs a request can name: every provider's chat, OpenAI's / Azure's Responses, embeddings (those two and Gemini),
# and OpenAI's / Azure's legacy completions and moderations (batch-file lines only: no `--endpoint` builds them).
Api = Literal["chat", "responses", "embeddings", "completions", "moderations"]
APIS: tuple[Api, ...] = ("chat", "responses", "embeddings", "completions", "moderations")


class Request(_Model):
    """One call to a model, as freight sees it before any provider shapes it."""

    custom_id: str
    model: str
    messages: list[Message]
    max_tokens: int = Field(gt=0)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stop_sequences: list[str] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    # A JSON Schema the reply must satisfy; when set, the request asks the model for JSON.
    output_schema: dict[str, Any] | None = None
    # Which of the provider's APIs answers it: "chat" (every provider), "responses" (OpenAI, Azure) or "embeddings"
    # (OpenAI, Azure, Gemini; each user message is one input to embed), "completions" (one user message, the prompt)
    # or "moderations" (each user message one input to classify; OpenAI, Azure). A batch holds requests of one API.
    api: Api = "chat"
    # Parameters of that API freight does not model, sent as they are (an embedding's `dimensions`).
    params: dict[str, Any] = Field(default_factory=dict)
    # Where it comes from: the input document, which attempt this is, and what was changed to get here.
    item_id: str | None = None
    attempt: int = Field(default=0, ge=0)
    parent_custom_id: str | None = None
    fix: str | None = None

    @field_validator("custom_id")
    @classmethod
    def _valid_custom_id(cls, v: str) -> str:
        return check_custom_id(v)

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[Message]) -> list[Message]:
        if not v:
            raise ValueError("a request needs at least one message")
        return v

    @property
    def wants_json(self) -> bool:
        return self.output_schema is not None

    def needs_sync(self) -> str | None:
        """Why this request cannot go through a batch (None when it can)."""
        if self.tools:
            return "it defines tools: tool calling is multi-turn, and a batch request is single-turn"
        if any(m.has_tool_turn() for m in self.messages):
            return "it carries tool_use/tool_result turns: a batch request is single-turn"
        return None

    def prompt_text(self) -> str:
        """Everything the model reads, as one string (for size estimates and fault markers)."""
        parts = [self.system or ""] + [m.text() for m in self.messages]
        return "\n".join(p for p in parts if p)


# --- outcomes ---------------------------------------------------------------------------------------------------


class StopReason(StrEnum):
    END = "end"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"


class ErrorKind(StrEnum):
    CONTEXT_OVERFLOW = "context_overflow"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    VALIDATION_FAILED = "validation_failed"
    UNKNOWN = "unknown"

    @property
    def retryable(self) -> bool:
        """Worth sending again unchanged: the failure was the service's, not the request's."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.UNKNOWN}
)


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
        )


class Succeeded(_Model):
    status: Literal["succeeded"] = "succeeded"
    text: str
    parsed: Any = None  # the JSON value when JSON was asked for and the text parsed
    stop_reason: StopReason = StopReason.END
    usage: Usage = Field(default_factory=Usage)


class Errored(_Model):
    status: Literal["errored"] = "errored"
    kind: ErrorKind
    raw_type: str = ""  # the provider's own error type / code, kept beside the normalized kind
    message: str = ""
    usage: Usage = Field(default_factory=Usage)
    # A context overflow's numbers, as the provider counted them (the adapter reads them; the runner never parses
    # a provider's text): the prompt's tokens and the model's window. None when the provider did not say.
    prompt_tokens: int | None = None
    context_window: int | None = None


class Canceled(_Model):
    status: Literal["canceled"] = "canceled"


class Expired(_Model):
    status: Literal["expired"] = "expired"


Outcome = Annotated[Succeeded | Errored | Canceled | Expired, Field(discriminator="status")]


class Result(_Model):
    """An outcome correlated to the request it answers."""

    custom_id: str
    outcome: Outcome


# --- state machines ---------------------------------------------------------------------------------------------


class BatchState(StrEnum):
    PREPARING = "preparing"
    SUBMITTED = "submitted"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    ENDED = "ended"
    CANCELING = "canceling"
    CANCELED = "canceled"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (BatchState.ENDED, BatchState.CANCELED, BatchState.EXPIRED, BatchState.FAILED)


_ACTIVE = {BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING}
BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    BatchState.PREPARING: frozenset({BatchState.SUBMITTED, BatchState.FAILED}),
    BatchState.SUBMITTED: frozenset(
        {
            BatchState.IN_PROGRESS,
            BatchState.FINALIZING,
            BatchState.ENDED,
            BatchState.CANCELING,
            BatchState.CANCELED,
            BatchState.EXPIRED,
            BatchState.FAILED,
        }
    ),
    BatchState.IN_PROGRESS: frozenset(
        {
            BatchState.FINALIZING,
            BatchState.ENDED,
            BatchState.CANCELING,
            BatchState.CANCELED,
            BatchState.EXPIRED,
            BatchState.FAILED,
        }
    ),
    BatchState.FINALIZING: frozenset({BatchState.ENDED, BatchState.CANCELING, BatchState.EXPIRED, BatchState.FAILED}),
    BatchState.CANCELING: frozenset({BatchState.CANCELED, BatchState.ENDED, BatchState.EXPIRED}),
    BatchState.ENDED: frozenset(),
    BatchState.CANCELED: frozenset(),
    BatchState.EXPIRED: frozenset(),
    BatchState.FAILED: frozenset(),
}


class JobState(StrEnum):
    CREATED = "created"
    SAMPLING = "sampling"
    RUNNING = "running"
    CANCELING = "canceling"
    COMPLETED = "completed"  # every item reached a final outcome (succeeded or failed for good)
    CANCELED = "canceled"
    STOPPED = "stopped"  # the sample gate or a fatal error stopped it before the full run

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.CANCELED, JobState.STOPPED)


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.CREATED: frozenset({JobState.SAMPLING, JobState.RUNNING, JobState.CANCELING, JobState.CANCELED}),
    JobState.SAMPLING: frozenset({JobState.RUNNING, JobState.STOPPED, JobState.CANCELING, JobState.CANCELED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.CANCELING, JobState.CANCELED, JobState.STOPPED}),
    # A cancel whose provider calls cannot heal (a revoked key) stops the job instead of hanging.
    JobState.CANCELING: frozenset({JobState.CANCELED, JobState.STOPPED}),
    JobState.COMPLETED: frozenset(),
    JobState.CANCELED: frozenset(),
    # A stopped job (the sample gate, an error that cannot heal) is started again, or canceled, once the cause is fixed.
    JobState.STOPPED: frozenset({JobState.SAMPLING, JobState.RUNNING, JobState.CANCELING, JobState.CANCELED}),
}


class ItemState(StrEnum):
    PENDING = "pending"  # waiting for (another) request to be sent
    IN_FLIGHT = "in_flight"  # a request for it is out and has no outcome yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanently, or out of retries
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELED)


ITEM_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    ItemState.PENDING: frozenset({ItemState.IN_FLIGHT, ItemState.FAILED, ItemState.CANCELED}),
    ItemState.IN_FLIGHT: frozenset({ItemState.PENDING, ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELED}),
    ItemState.SUCCEEDED: frozenset(),
    ItemState.FAILED: frozenset(),
    ItemState.CANCELED: frozenset(),
}


def check_transition(table: dict[Any, frozenset[Any]], current: StrEnum, new: StrEnum, what: str) -> None:
    if current == new:
        return
    if new not in table[current]:
        raise IllegalTransition(f"{what} cannot go from {current.value} to {new.value}")


class RequestCounts(_Model):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


class Batch(_Model):
    provider: str
    provider_batch_id: str
    state: BatchState
    counts: RequestCounts = Field(default_factory=RequestCounts)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None


class WebhookEvent(_Model):
    """A provider's verified notice that one of its batches changed (OpenAI's `batch.completed` ...): a reason to
    poll that batch now. Never a fact to record: the poll is."""

    id: str
    type: str
    batch_id: str


class Item(_Model):
    """One input document of a job."""

    item_id: str
    job_id: str
    source: str  # where the document came from: file path, or file:line
    text: str
    state: ItemState = ItemState.PENDING
    signature: str = ""  # cheap structural signature (see sampling), for few-shot remediation


class Job(_Model):
    job_id: str
    name: str = ""
    state: JobState = JobState.CREATED
    provider: str
    model: str
    config: dict[str, Any] = Field(default_factory=dict)  # the run's options, so resume needs no flags
    created_at: datetime | None = None
