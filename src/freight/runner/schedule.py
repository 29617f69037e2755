"""`freight schedule`: run each workflow of a workflows file at the cadence `freight plan` computes, hedged.

The idea. A tick looks at each workflow's input (a folder, or a glob), records every file it has not seen (its
arrival is its modification time), and when the oldest waiting file has waited as long as the plan's cadence allows
(`every_min`: the SLA's buffer after the batch window, less the safety margin) it takes every waiting file into one
job whose deadline is the oldest arrival + the SLA, hedged (runner/hedge.py). A workflow `freight plan` routes to
sync is submitted at once, synchronously. Then the tick moves every open job one step (submit, poll, ingest, hedge)
and closes those that ended, writing their outputs.

The invariant: each file is taken exactly once, whatever stops the process. The store holds every file seen and the
submission that took it; taking is one transaction (the files' rows name the submission, or nothing changed), and
the submission holds the job's options, so a job that was taken but never opened (a crash in between) is opened on
the next tick. A restart loses no file (they are re-listed, and the seen ones recognized) and takes none twice.
The documents of a submission are copied into a JSONL snapshot first (in `state_dir`): the job reads that, not the
inbox, so a file edited after it was taken does not change the job.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freight.domain import JobHeld, JobState, JobStopped, UsageError
from freight.plan import Workflow, WorkflowFile, route, submission_cadence
from freight.plan.report import policy_for as plan_policy
from freight.providers import Provider, get_provider, key_env, provider_names
from freight.runner.checks import check_prompt, validate_schema
from freight.runner.crash import crashpoint
from freight.runner.hedge import policy_for
from freight.runner.job import RunOptions, job_id_for, open_job
from freight.runner.loop import Runner
from freight.runner.report import build_report
from freight.store import JobLease, Store

SUFFIXES = (".txt", ".md", ".json")


@dataclass
class TickReport:
    """What one tick did, for the CLI to print."""

    lines: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # job ids
    completed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


@dataclass(frozen=True)
class Scheduled:
    """A workflow of the file that `freight schedule` can run, its paths resolved against the file's folder."""

    workflow: Workflow
    input: str  # a folder or a glob, absolute
    prompt: str
    system: str | None
    schema: dict[str, Any] | None


def scheduled_workflows(file: WorkflowFile, base: Path) -> tuple[list[Scheduled], list[str]]:
    """The workflows with an `input`, checked (prompt placeholder, schema), and a note for each one left out."""
    found: list[Scheduled] = []
    skipped: list[str] = []
    for wf in file.workflows:
        if wf.input is None:
            skipped.append(f"{wf.name}: not scheduled (no input: folder or glob)")
            continue
        if wf.prompt is None:
            raise UsageError(f"workflow {wf.name}: has an input but no prompt file (prompt: PATH)")
        if wf.sla is None and wf.deadline is None:
            raise UsageError(f"workflow {wf.name}: give it an sla (e.g. sla: 30h): its documents' deadlines need one")
        prompt = _read(base, wf.prompt, wf.name, "prompt")
        check_prompt(prompt, f"workflow {wf.name} prompt")
        schema = None
        if wf.schema_path is not None:
            try:
                schema = json.loads(_read(base, wf.schema_path, wf.name, "schema"))
            except json.JSONDecodeError as exc:
                raise UsageError(f"workflow {wf.name}: schema {wf.schema_path} is not JSON ({exc.msg})") from None
            validate_schema(schema, "schema", wf.schema_path)
        system = _read(base, wf.system, wf.name, "system") if wf.system else None
        pattern = wf.input if Path(wf.input).is_absolute() else str(base / wf.input)
        found.append(Scheduled(wf, pattern, prompt, system, schema))
    return found, skipped


def _read(base: Path, name: str, workflow: str, what: str) -> str:
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"workflow {workflow}: cannot read its {what} file {path} ({exc.strerror})") from None


def list_files(pattern: str) -> list[tuple[str, float]]:
    """(absolute path, modification time) of each document file in a folder (recursively) or matching a glob."""
    root = Path(pattern)
    paths = root.rglob("*") if root.is_dir() else (Path(p) for p in glob.glob(pattern, recursive=True))
    out = []
    for p in paths:
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            with contextlib.suppress(OSError):  # gone between listing and stat: the next tick sees it, or not
                out.append((str(p.resolve()), p.stat().st_mtime))
    return sorted(out)


class Scheduler:
    def __init__(
        self,
        store: Store,
        file: WorkflowFile,
        base: Path,
        *,
        state_dir: Path,
        out_root: Path = Path("freight-out"),
        api_key: str | None = None,
        now: Callable[[], float] = time.time,
        provider_factory: Callable[[RunOptions], Provider] | None = None,
    ) -> None:
        self.store = store
        self.file = file
        self.workflows, self.skipped = scheduled_workflows(file, base)
        self.state_dir = state_dir
        self.out_root = out_root
        self.now = now
        self._api_key = api_key
        self._factory = provider_factory or (
            lambda o: get_provider(o.provider, base_url=o.base_url, api_key=self._api_key)
        )
        self._providers: dict[tuple[str, str | None], Provider] = {}
        self.policy = plan_policy(file.settings, min_batch_requests=None, safety_margin=None)
        if provider_factory is None:
            self._check_keys()

    def _check_keys(self) -> None:
        """Refuse, before any file is taken, a workflow whose provider is unknown or has no key to send with."""
        known = provider_names()
        for sched in self.workflows:
            name = sched.workflow.provider
            if name not in known:
                raise UsageError(
                    f"workflow {sched.workflow.name}: unknown provider {name!r}; use one of {', '.join(known)} "
                    "(freight schedule needs a provider's API or a base_url, not the embedded model)"
                )
            env = key_env(name)
            if self._api_key is None and env and not os.environ.get(env):
                raise UsageError(f"workflow {sched.workflow.name}: no key for {name}: set {env}")

    # --- a tick ---------------------------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        report = TickReport()
        for sched in self.workflows:
            self._take(sched, report)
        self._drive(report)
        return report

    def _take(self, sched: Scheduled, report: TickReport) -> None:
        wf, now = sched.workflow, self.now()
        new = self.store.schedule_seen(wf.name, list_files(sched.input), now)
        waiting = self.store.schedule_waiting(wf.name)
        if new:
            report.say(f"{wf.name}: {new} new file(s)")
        if not waiting:
            return
        oldest = min(f["arrived_at"] for f in waiting)
        decision = route(wf, self.policy, now=datetime.fromtimestamp(now, UTC))
        cadence = submission_cadence(decision, self.policy.safety_margin, datetime.fromtimestamp(oldest, UTC))
        wait = cadence.every_min if cadence is not None else timedelta(0)
        due = oldest + wait.total_seconds()
        if now < due:
            when = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            report.say(f"{wf.name}: {len(waiting)} file(s) waiting; the cadence ({cadence.every() if cadence else '-'})"
                       f" submits them at {when}")  # fmt: skip
            return
        allowed = wf.sla if wf.sla is not None else timedelta(0)
        deadline = oldest + allowed.total_seconds()
        if wf.deadline is not None and (wf.sla is None or wf.deadline.timestamp() < deadline):
            deadline = wf.deadline.timestamp()
        opts = self._options(sched, waiting, deadline, "batch" if decision.is_batch else "sync")
        job_id = job_id_for(opts)
        crashpoint("schedule.snapshot")
        self.store.schedule_take(wf.name, [f["path"] for f in waiting], job_id, asdict(opts), deadline, now)
        crashpoint("schedule.taken")
        report.submitted.append(job_id)
        report.say(
            f"{wf.name}: took {len(waiting)} file(s) into {job_id} ({decision.mode.value}), deadline "
            f"{datetime.fromtimestamp(deadline, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )

    def _options(self, sched: Scheduled, waiting: list[dict[str, Any]], deadline: float, mode: str) -> RunOptions:
        """The job's options, its documents copied into a snapshot the job reads (named by its content)."""
        docs = []
        for f in waiting:
            path = Path(f["path"])
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            docs.append({"id": _doc_id(sched.input, path), "text": text})
        body = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        snapshot = self.state_dir / f"{sched.workflow.name}-{digest}.jsonl"
        snapshot.write_text(body, encoding="utf-8")
        wf = sched.workflow
        return RunOptions(
            input=str(snapshot),
            provider=wf.provider,
            model=wf.model,
            prompt=sched.prompt,
            system=sched.system,
            schema=sched.schema,
            max_tokens=wf.max_tokens,
            mode=mode,
            base_url=wf.base_url,
            deadline=datetime.fromtimestamp(deadline, UTC).isoformat(),
            extra={"workflow": wf.name},
        )

    # --- driving the open jobs ----------------------------------------------------------------------------------

    def _drive(self, report: TickReport) -> None:
        for sub in self.store.schedule_open():
            opts = RunOptions.from_config(sub["config"])
            if self.store.get_job(sub["job_id"]) is None or not self.store.events(sub["job_id"], kind="job.ingested"):
                open_job(self.store, opts)  # taken, never opened: a crash in between
            try:
                with JobLease(self.store, sub["job_id"]) as lease:
                    ended = self._step(sub["job_id"], opts, lease)
            except JobHeld as exc:  # `freight resume` has it: it carries on there
                report.say(f"{sub['workflow']}: {sub['job_id']}: {exc}")
                continue
            except JobStopped as exc:  # the job says why; the next tick tries again (`freight status JOB`)
                report.say(f"{sub['workflow']}: {sub['job_id']} stopped: {exc}")
                continue
            if ended:
                self.store.schedule_done(sub["id"], self.now())
                report.completed.append(sub["job_id"])
                report.say(f"{sub['workflow']}: {sub['job_id']} completed")

    def _step(self, job_id: str, opts: RunOptions, lease: JobLease) -> bool:
        """One pass of the job's loop; True once it has ended (outputs written)."""
        job = self.store.get_job(job_id)
        assert job is not None
        if job.state in (JobState.COMPLETED, JobState.CANCELED):
            return True
        if job.state in (JobState.CREATED, JobState.STOPPED):
            self.store.set_job_state(job_id, JobState.RUNNING)
        key = (opts.provider, opts.base_url)
        if key not in self._providers:
            self._providers[key] = self._factory(opts)
        runner = Runner(
            self.store, self._providers[key], job_id, opts, lease=lease, hedge=policy_for(opts), wall_clock=self.now
        )
        runner.step()
        if not runner._finished():
            return False
        self.store.set_job_state(job_id, JobState.COMPLETED)
        build_report(self.store, job_id, write_to=self.out_root / job_id)
        return True

    def run_forever(
        self, interval: float, on_tick: Callable[[TickReport], None], sleep: Callable[[float], None]
    ) -> None:
        while True:
            on_tick(self.tick())
            sleep(interval)


def _doc_id(pattern: str, path: Path) -> str:
    """The document's id: its path under the input folder (or the glob's fixed part), without the suffix."""
    root = Path(pattern)
    if not root.is_dir():
        fixed = [part for part in Path(pattern).parts if not any(c in part for c in "*?[")]
        root = Path(*fixed) if fixed else Path("/")
        while not root.is_dir() and root != root.parent:
            root = root.parent
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    return str(rel.with_suffix(""))


def iter_status(store: Store, file: WorkflowFile) -> Iterator[str]:
    """Per workflow: files taken and waiting, for `freight schedule --status`."""
    for wf in file.workflows:
        rows = store.schedule_files_of(wf.name)
        if not rows:
            continue
        jobs = sorted({r["job_id"] for r in rows if r["job_id"]})
        waiting = sum(1 for r in rows if r["job_id"] is None)
        yield f"{wf.name}: {len(rows) - waiting} file(s) taken into {len(jobs)} job(s), {waiting} waiting"
