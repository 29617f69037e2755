"""The progress display of `run`, `resume` and sync mode: it renders the runner's `Snapshot` and owns no job state.

Three shapes of the same snapshot, chosen by where the output goes:
- a terminal: a live rich bar (done / failed / pending), the batches by state, rate, ETA and cost so far, redrawn in
  place, with each note printed above it as it happens;
- a pipe or a file: one plain line when something moved (and at most every `quiet` seconds when nothing did), and
  each note as its own line - what a CI log or `tee` wants;
- `--json`: one JSON object per line (`{"event": "progress", ...}` / `{"event": "note", ...}`) on stderr, so stdout
  stays the report.
Everything the display knows besides the snapshot (notes already shown, when it last printed) is about the display.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from freight.runner.loop import Snapshot


@dataclass(frozen=True)
class Figures:
    """What every shape shows, derived from one snapshot."""

    done: int
    failed: int
    pending: int
    total: int
    batches: dict[str, int]
    rate: float | None  # documents finished per second by this run, over the run so far
    eta: float | None  # seconds, at that rate
    cost_usd: float | None  # None: a model of the run has no price, so the cost is unknown (never $0)
    elapsed: float

    @classmethod
    def of(cls, s: Snapshot, priced: bool = True, spent_before: float = 0.0) -> Figures:
        done = s.items.get("succeeded", 0)
        failed = s.items.get("failed", 0) + s.items.get("canceled", 0)
        pending = s.items.get("pending", 0) + s.items.get("in_flight", 0)
        # Only what this run finished: a resumed job's earlier documents (or the sample's) came before its clock.
        finished = done + failed - s.finished_before
        rate = finished / s.elapsed if s.elapsed > 0 and finished > 0 else None
        eta = pending / rate if rate else None
        by_state = Counter(state for _, state, _ in s.batches)
        cost = s.cost_usd + spent_before if priced else None
        return cls(done, failed, pending, done + failed + pending, dict(by_state), rate, eta, cost, s.elapsed)

    @property
    def cost_text(self) -> str:
        return "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"

    def batches_text(self) -> str:
        if not self.batches:
            return "none yet"
        n = sum(self.batches.values())
        return f"{n} (" + ", ".join(f"{v} {k}" for k, v in sorted(self.batches.items())) + ")"

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "total": self.total,
            "batches": self.batches,
            "rate_per_s": None if self.rate is None else round(self.rate, 3),
            "eta_s": None if self.eta is None else round(self.eta, 1),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
            "elapsed_s": round(self.elapsed, 1),
        }


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f} docs/s" if rate >= 0.1 else f"{rate * 60:.1f} docs/min"


def plain_line(f: Figures) -> str:
    return (
        f"[{duration(f.elapsed):>6}] done {f.done}  failed {f.failed}  pending {f.pending}  |  batches: "
        f"{f.batches_text()}  |  {rate_text(f.rate)}, eta {duration(f.eta)}  |  cost {f.cost_text}"
    )


class Display:
    """Called with each snapshot; `note` for what happens outside the loop (the sample, the embedded server)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._shown_notes: set[str] = set()
        self.priced: Callable[[], bool] = lambda: True  # the CLI asks the job (a query), never keeps it
        self.spent_before = 0.0  # what the job spent before the loop (its sample), from the job's log

    def __call__(self, snapshot: Snapshot) -> None:
        for message in snapshot.notes:
            if message not in self._shown_notes:
                self.note(message)
        self.update(snapshot)

    def _new_note(self, message: str) -> bool:
        if message in self._shown_notes:
            return False
        self._shown_notes.add(message)
        return True

    def update(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def note(self, message: str) -> None:
        if self._new_note(message):
            self.stream.write(f"note: {message}\n")
            self.stream.flush()

    def close(self) -> None:
        """Leave the screen as a log would: the last state stays visible."""

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainDisplay(Display):
    """A line when something moved; while nothing moves, at most one every `quiet` seconds (a heartbeat)."""

    def __init__(self, stream: IO[str], quiet: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream)
        self.quiet = quiet
        self.clock = clock
        self._last: tuple[Any, ...] | None = None
        self._at = 0.0

    def update(self, snapshot: Snapshot) -> None:
        f = Figures.of(snapshot, self.priced(), self.spent_before)
        key = (f.done, f.failed, f.pending, tuple(sorted(f.batches.items())))
        if key == self._last and self.clock() - self._at < self.quiet:
            return
        self._last, self._at = key, self.clock()
        self.stream.write(plain_line(f) + "\n")
        self.stream.flush()


class JsonDisplay(Display):
    """One JSON object per line: a progress event per snapshot that moved, a note event per note."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._last: dict[str, Any] | None = None

    def update(self, snapshot: Snapshot) -> None:
        figures = Figures.of(snapshot, self.priced(), self.spent_before).as_dict()
        moved = {k: v for k, v in figures.items() if k not in ("elapsed_s", "rate_per_s", "eta_s")}
        if moved == self._last:
            return
        self._last = moved
        self._emit({"event": "progress", "job": snapshot.job_id, **figures})

    def note(self, message: str) -> None:
        if self._new_note(message):
            self._emit({"event": "note", "message": message})

    def _emit(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()


class LiveDisplay(Display):
    """The terminal: a bar redrawn in place (rich.Live), notes printed above it so they stay in the scrollback."""

    def __init__(self, stream: IO[str], console: Console | None = None) -> None:
        super().__init__(stream)
        self.console = console or Console(file=stream)
        self._live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
        self._started = False

    def _ensure(self) -> None:
        if not self._started:
            self._live.start()
            self._started = True

    def update(self, snapshot: Snapshot) -> None:
        self._ensure()
        self._live.update(render(snapshot, self.priced(), self.spent_before), refresh=True)

    def note(self, message: str) -> None:
        if self._new_note(message):
            self._ensure()
            self._live.console.print(Text(f"note: {message}", style="yellow"))

    def close(self) -> None:
        if self._started:
            self._live.stop()
            self._started = False


def render(snapshot: Snapshot, priced: bool = True, spent_before: float = 0.0) -> RenderableType:
    """The live view of one snapshot: a bar of finished documents, then the figures beneath it."""
    f = Figures.of(snapshot, priced, spent_before)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        Text(snapshot.job_id, style="bold"),
        ProgressBar(total=max(f.total, 1), completed=f.done + f.failed, width=40),
        Text(f"{f.done + f.failed}/{f.total}"),
    )
    figures = Text.assemble(
        ("done ", "dim"), (str(f.done), "green"), ("  failed ", "dim"), (str(f.failed), "red" if f.failed else ""),
        ("  pending ", "dim"), (str(f.pending), ""),
        ("  |  batches ", "dim"), f.batches_text(),
    )  # fmt: skip
    timing = Text.assemble(
        ("rate ", "dim"), rate_text(f.rate), ("  eta ", "dim"), duration(f.eta),
        ("  elapsed ", "dim"), duration(f.elapsed), ("  cost ", "dim"), f.cost_text,
    )  # fmt: skip
    return Group(bar, figures, timing)


def display_for(as_json: bool, stream: IO[str] | None = None) -> Display:
    """The right shape for where the output goes: JSON events, a live bar on a terminal, else plain lines."""
    out = stream or sys.stderr
    if as_json:
        return JsonDisplay(out)
    if out.isatty():
        return LiveDisplay(out)
    return PlainDisplay(out)


@contextlib.contextmanager
def working(message: str, stream: IO[str] | None = None) -> Iterator[Callable[[int, int], None]]:
    """While a step with no snapshot runs (the synchronous sample): yields `answered(done, total)`, which on a
    terminal updates a spinner's line in place ("3/8 answered"), and piped prints a plain line per answer."""
    out = stream or sys.stderr
    if not out.isatty():

        def line(done: int, total: int) -> None:
            print(f"{message}: {done}/{total} answered", file=out, flush=True)

        yield line
        return
    with Console(file=out).status(message) as status:

        def update(done: int, total: int) -> None:
            status.update(f"{message}: {done}/{total} answered")

        yield update
