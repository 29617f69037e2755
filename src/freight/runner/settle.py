"""Acting on one recorded outcome: validate it, and either finish the document or record the fix that retries it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freight.domain import Canceled, ItemState, JobState, Outcome, Request, StopReason, Succeeded, Usage
from freight.providers import Provider
from freight.runner.chunking import average_vectors, is_vector, merge_outputs
from freight.runner.crash import crashpoint
from freight.runner.ids import base_custom_id, retry_custom_id
from freight.runner.inputs import input_kind
from freight.runner.job import RunOptions
from freight.runner.remediate import Context, failure_of, remedy
from freight.runner.validate import check
from freight.store import Decide, PageRow, Settlement, Store

log = logging.getLogger(__name__)
_EXAMPLES = 2
_EXCERPT = 1500


class Settler:
    def __init__(self, store: Store, provider: Provider, job_id: str, opts: RunOptions) -> None:
        self.store = store
        self.provider = provider
        self.job_id = job_id
        self.opts = opts
        self.template = opts.template()
        self.pricer = opts.pricer()
        self._unpriced: set[str] = set()
        self._requests_input: bool | None = None
        self._hedge_seen = False

    def costs(self, usage: Usage, batch: bool, custom_id: str | None = None) -> tuple[float, float]:
        """(what this usage costs on the path it took, what it would have cost synchronously), at the request's own
        model: a ready-made batch line carries its own. A model with no price is recorded as such (the report then
        reads "unknown", never $0) and its cost column holds 0."""
        model = self.opts.model
        if custom_id is not None and self._ready_made(""):
            row = self.store.get_request(self.job_id, custom_id)
            model = row["request"].model if row is not None else model
        return self._priced(model, usage, batch)

    def _priced(self, model: str, usage: Usage, batch: bool) -> tuple[float, float]:
        paid, sync = self.pricer.cost(model, usage, batch), self.pricer.cost(model, usage, False)
        if paid is None or sync is None:
            if model not in self._unpriced:
                self._unpriced.add(model)
                self.store.log(self.job_id, "cost.unpriced", model=model, message=f"no price for model {model!r}")
            return 0.0, 0.0
        return paid, sync

    def page_costs(self, entries: list[tuple[str, Usage]], batch: bool) -> list[tuple[float, float]]:
        """`costs` for a page: on ready-made request lines, each request's model is read in one query per page."""
        models: dict[str, str] = {}
        if entries and self._ready_made(""):
            rows = self.store.requests_of(self.job_id, [cid for cid, _ in entries])
            models = {cid: row["request"].model for cid, row in rows.items()}
        return [self._priced(models.get(cid, self.opts.model), usage, batch) for cid, usage in entries]

    def decider(self) -> Decide:
        """What `Store.record_outcomes` calls to settle a page in the transaction that records it."""
        job = self.store.get_job(self.job_id)
        canceling = job is not None and job.state in (JobState.CANCELING, JobState.CANCELED)
        return _InHand(self, canceling, bodies=self.opts.schema is None and self._ready_made(""))

    def decide(
        self, rows: Sequence[PageRow], found: Mapping[str, Outcome], canceling: bool
    ) -> tuple[list[Settlement], list[str]]:
        """Split a page into what settles in bulk and what needs `settle` one by one. The common case, a whole
        document whose reply is valid (or whose item is final already), goes in bulk; a retry to build, a part to
        merge, a canceled job, a document twice in the page go one by one."""
        bulk: list[Settlement] = []
        later: list[str] = []
        seen: set[str] = set()
        for row in rows:
            cid, outcome = row.custom_id, found.get(row.custom_id)
            if outcome is None or row.state == "settled":
                continue
            item_id = row.item_id
            if row.item_state is None or item_id in seen or row.part is not None:
                later.append(cid)
                continue
            if row.item_state.terminal:
                bulk.append(Settlement(cid, item_id))
            elif canceling or not isinstance(outcome, Succeeded) or outcome.stop_reason is StopReason.MAX_TOKENS:
                later.append(cid)
                continue
            else:
                schema = self.opts.schema
                if schema is None and row.request is not None:
                    schema = row.request.output_schema
                checked = check(outcome, schema)
                if not checked.ok:
                    later.append(cid)
                    continue
                output = {"value": checked.value, "meta": {}}
                bulk.append(Settlement(cid, item_id, item_state=ItemState.SUCCEEDED, output=output))
            seen.add(item_id)
        return bulk, later

    def settle_page(self, custom_ids: list[str]) -> None:
        """Settle a page of recorded outcomes (a run stopped between recording and settling them, or they needed
        more than the page in hand): the bulk from three queries in one transaction (`Store.settle_many`), the rest
        one by one. A crash between the two leaves those `done`, settled on resume."""
        if not custom_ids:
            return
        rows = self.store.requests_of(self.job_id, custom_ids)
        found = self.store.outcomes_of(self.job_id, custom_ids)
        item_rows = self.store.items_of(self.job_id, list({r["item_id"] for r in rows.values()}))
        job = self.store.get_job(self.job_id)
        assert job is not None
        canceling = job.state in (JobState.CANCELING, JobState.CANCELED)
        page = []
        for cid in custom_ids:
            row = rows.get(cid)
            if row is None:
                continue
            item = item_rows.get(row["item_id"])
            page.append(
                PageRow(
                    cid,
                    row["state"],
                    row["item_id"],
                    row["part"],
                    row["mode"],
                    item.state if item is not None else None,
                    row["request"],
                )
            )
        bulk, later = self.decide(page, found, canceling)
        self.store.settle_many(self.job_id, bulk)
        crashpoint("settle.page")
        for _ in bulk:
            crashpoint("ingest.settled")
        self.settle_each(later)

    def settle_each(self, custom_ids: Sequence[str]) -> None:
        for cid in custom_ids:
            self.settle(cid)
            crashpoint("ingest.settled")

    def settle(self, custom_id: str) -> None:
        row = self.store.get_request(self.job_id, custom_id)
        outcome = self.store.get_outcome(self.job_id, custom_id)
        assert row is not None and outcome is not None
        if row["state"] == "settled":
            return
        item_id = row["item_id"]
        item = self.store.get_item(self.job_id, item_id)
        assert item is not None
        job = self.store.get_job(self.job_id)
        assert job is not None
        if item.state.terminal:
            self.store.settle(self.job_id, custom_id)  # e.g. another part of the same document already failed it
            return
        if job.state in (JobState.CANCELING, JobState.CANCELED) and not isinstance(outcome, Succeeded):
            self.store.settle(
                self.job_id,
                custom_id,
                item_state=ItemState.CANCELED,
                error={"kind": "canceled", "message": "the job was canceled", "raw_type": ""},
            )
            return
        part = (row["part"], row["parts"], row["chunk_group"]) if row["part"] is not None else None
        checked = check(outcome, self._schema(row["request"])) if isinstance(outcome, Succeeded) else None
        usable = (
            checked is not None
            and checked.ok
            and isinstance(outcome, Succeeded)
            and (outcome.stop_reason is not StopReason.MAX_TOKENS)
        )
        if usable:
            assert checked is not None
            if part is None:
                self.store.settle(
                    self.job_id, custom_id, item_state=ItemState.SUCCEEDED, output={"value": checked.value, "meta": {}}
                )
            else:
                self._settle_part(custom_id, part)
            return
        failure = failure_of(outcome, checked.error if checked else None)
        # A batch request the hedge canceled (runner/hedge.py) failed through no fault of its document: its
        # synchronous retry spends none of the document's --max-retries, and says what it is.
        hedged = isinstance(outcome, Canceled) and self._hedged()
        ctx = Context(
            template=self.template,
            max_retries=self.opts.max_retries + (1 if hedged else 0),
            context_window=self.provider.limits.context_for(self.opts.model),
            max_output_tokens=self.provider.limits.max_output_for(self.opts.model),
            document=None if self._ready_made(item_id) else item.text,
            next_id=self._id_source(item_id),
            examples=lambda: self.examples(item.signature, item_id),
        )
        fix = remedy(row["request"], part, failure, ctx, outcome)
        if hedged:
            fix.retries = [r.model_copy(update={"fix": "hedge"}) for r in fix.retries]
        if fix.give_up is not None:
            self.store.settle(self.job_id, custom_id, item_state=ItemState.FAILED, error=fix.give_up.as_dict())
        else:
            self.store.settle(self.job_id, custom_id, retries=fix.retries, parts=fix.parts)

    def _settle_part(self, custom_id: str, part: tuple[int, int, str]) -> None:
        """A part succeeded: when every part of the split has a valid output, merge them and finish the item."""
        _, parts, group = part
        best: dict[int, Any] = {}
        weights: dict[int, int] = {}
        for index, _cid, outcome in self.store.group_outcomes(self.job_id, group):
            if index in best or not isinstance(outcome, Succeeded) or outcome.stop_reason is StopReason.MAX_TOKENS:
                continue
            checked = check(outcome, self.opts.schema)
            if checked.ok:
                best[index] = checked.value
                weights[index] = outcome.usage.input_tokens
        if len(best) < parts:
            self.store.settle(self.job_id, custom_id)
            return
        values = [best[i] for i in range(parts)]
        conflicts: list[dict[str, Any]] = []
        if all(is_vector(v) for v in values):
            merged: Any = average_vectors(values, [weights[i] for i in range(parts)])
        else:
            merged, conflicts = merge_outputs(values)
        self.store.settle(
            self.job_id,
            custom_id,
            item_state=ItemState.SUCCEEDED,
            output={"value": merged, "meta": {"parts": parts, "conflicts": conflicts}},
        )

    def _hedged(self) -> bool:
        if not self._hedge_seen:
            self._hedge_seen = bool(self.store.events(self.job_id, kind="hedge.started"))
        return self._hedge_seen

    def _schema(self, request: Request) -> dict[str, Any] | None:
        """The schema a reply must match: the run's --schema, or the one a ready-made batch line asked for itself."""
        return self.opts.schema if self.opts.schema is not None else request.output_schema

    def _ready_made(self, item_id: str) -> bool:
        """The input was provider batch request lines: there is a prompt, but no document to split or re-render."""
        if self._requests_input is None:
            self._requests_input = input_kind(Path(self.opts.input)) == "requests"
        return self._requests_input

    def _id_source(self, item_id: str) -> Any:
        base = base_custom_id(item_id)
        counter = [self.store.count_item_requests(self.job_id, item_id)]

        def next_id() -> str:
            n = counter[0]
            counter[0] += 1
            return retry_custom_id(base, n)

        return next_id

    def examples(self, sig: str, item_id: str) -> list[tuple[str, str]]:
        """Worked examples for few-shot: documents of the same signature that already succeeded in this job, whole
        (not merged from parts), as (input excerpt, validated output)."""
        found: list[tuple[str, str]] = []
        for row in self.store.succeeded_like(self.job_id, sig, exclude=item_id, limit=_EXAMPLES * 3):
            output = row["output"] or {}
            if output.get("meta", {}).get("parts"):
                continue
            value = output.get("value")
            found.append((row["text"][:_EXCERPT], value if isinstance(value, str) else json.dumps(value)))
            if len(found) >= _EXAMPLES:
                break
        return found


@dataclass
class _InHand:
    """`Settler.decide` for the page being recorded: its bulk part is settled in the recording transaction."""

    settler: Settler
    canceling: bool
    bodies: bool

    def __call__(self, rows: Sequence[PageRow], outcomes: Mapping[str, Outcome]) -> list[Settlement]:
        bulk = self.settler.decide(rows, outcomes, self.canceling)[0]
        crashpoint("ingest.mid_page")  # inside the page's transaction: a kill here leaves none of the page
        return bulk
