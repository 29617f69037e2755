"""Accuracy against labels: "succeeded" means the reply was valid, not that it was right.

`--expected FILE` is a JSONL file with one labelled document a line: `{"id": ..., "output": {...}}`, or the output's
fields inline beside an `id` or a `file` (the shape of `examples/invoices/expected.jsonl`:
`{"file": "docs/invoice-01.txt", "vendor": ...}`). Each top-level field of the expected output is one field to get
right; a document that failed counts every one of its fields wrong. The comparison forgives what a reader would
(case and spacing in text, 12.5 vs 12.50, a number given as text) and nothing else. Pure functions: the CLI and the
sample gate feed them outputs, they return the scores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from freight.domain import UsageError

_ID_KEYS = ("id", "doc_id", "custom_id", "file")


@dataclass
class Labels:
    """Expected outputs by document id; `aliases` lets a label keyed by file (`docs/a.txt`) match the id `a`."""

    path: str
    by_id: dict[str, dict[str, Any]]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        if doc_id in self.by_id:
            return self.by_id[doc_id]
        key = self.aliases.get(doc_id) or self.aliases.get(_stem(doc_id))
        return self.by_id.get(key) if key else None


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).with_suffix("").name


def load_labels(path: str, text: str) -> Labels:
    """Parse the expected file's text; each mistake names the line and what to do."""
    by_id: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{n}: --expected is not valid JSON here ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            raise UsageError(f'{path}:{n}: --expected needs one JSON object a line: {{"id": ..., "output": {{...}}}}')
        key = next((k for k in _ID_KEYS if isinstance(row.get(k), str | int)), None)
        if key is None:
            raise UsageError(f'{path}:{n}: no document id (looked for {", ".join(_ID_KEYS)}); add "id"')
        doc_id = str(row[key])
        output = row["output"] if "output" in row else {k: v for k, v in row.items() if k not in _ID_KEYS}
        if not isinstance(output, dict) or not output:
            raise UsageError(f"{path}:{n}: the expected output of {doc_id!r} must be a JSON object with the fields")
        if doc_id in by_id:
            raise UsageError(f"{path}:{n}: {doc_id!r} is labelled twice; keep one line per document")
        by_id[doc_id] = output
        aliases.setdefault(_stem(doc_id), doc_id)
        if key == "file":
            aliases.setdefault(str(PurePosixPath(doc_id).with_suffix("")), doc_id)
    if not by_id:
        raise UsageError(f"{path}: --expected holds no labelled documents")
    return Labels(path, by_id, aliases)


def normalize(value: Any) -> Any:
    """What counts as the same answer: text compared without case or extra spaces, numbers by value (a number
    written as text included), containers element by element."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return round(float(value), 6)
    if isinstance(value, str):
        text = re.sub(r"\s+", " ", value).strip().casefold()
        number = text.replace(",", "")
        if re.fullmatch(r"-?\d+(\.\d+)?", number):
            return round(float(number), 6)
        return text
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in value.items()}
    return value


def field_scores(expected: Mapping[str, Any], actual: Any) -> dict[str, bool]:
    """Each expected field: right or not. No output (a failed document) gets every field wrong."""
    got = actual if isinstance(actual, Mapping) else {}
    return {name: name in got and normalize(got[name]) == normalize(want) for name, want in expected.items()}


def score(outputs: Iterable[tuple[str, Any]], labels: Labels) -> dict[str, Any]:
    """Accuracy of (doc_id, output) pairs: per field, per document and overall. Documents without a label are
    counted apart (`unlabelled`), never as right or wrong."""
    per_field: dict[str, list[int]] = {}
    documents: list[dict[str, Any]] = []
    unlabelled: list[str] = []
    for doc_id, output in outputs:
        expected = labels.get(doc_id)
        if expected is None:
            unlabelled.append(doc_id)
            continue
        marks = field_scores(expected, output)
        for name, ok in marks.items():
            tally = per_field.setdefault(name, [0, 0])
            tally[0] += ok
            tally[1] += 1
        right = sum(marks.values())
        documents.append(
            {
                "doc_id": doc_id,
                "correct": right,
                "fields": len(marks),
                "accuracy": right / len(marks),
                "wrong": [n for n, ok in marks.items() if not ok],
            }
        )
    correct = sum(t[0] for t in per_field.values())
    total = sum(t[1] for t in per_field.values())
    return {
        "expected": labels.path,
        "labelled": len(documents),
        "unlabelled": unlabelled,
        "correct": correct,
        "fields": total,
        "accuracy": correct / total if total else None,
        "per_field": {n: {"correct": c, "total": t, "accuracy": c / t} for n, (c, t) in sorted(per_field.items())},
        "documents": documents,
    }


def render_accuracy(acc: dict[str, Any]) -> str:
    """A few lines: overall, then each field, then the documents that got something wrong."""
    if acc["accuracy"] is None:
        return f"accuracy: no sampled document is labelled in {acc['expected']} (check the ids there)"
    lines = [
        f"accuracy against {acc['expected']}: {acc['correct']}/{acc['fields']} fields right "
        f"({acc['accuracy']:.0%}) over {acc['labelled']} labelled documents"
    ]
    width = max(len(n) for n in acc["per_field"])
    for name, f in acc["per_field"].items():
        lines.append(f"  {name.ljust(width)}  {f['correct']}/{f['total']}  {f['accuracy']:.0%}")
    wrong = [d for d in acc["documents"] if d["wrong"]]
    for d in wrong[:10]:
        lines.append(f"  {d['doc_id']}: wrong {', '.join(d['wrong'])}")
    if len(wrong) > 10:
        lines.append(f"  ... and {len(wrong) - 10} more documents with a wrong field (--json lists them all)")
    if acc["unlabelled"]:
        lines.append(f"  not labelled (not counted): {len(acc['unlabelled'])} documents")
    return "\n".join(lines)


# --- the sample gate, with labels ------------------------------------------------------------------------------------


def judge(report: dict[str, Any], labels: Labels, min_accuracy: float | None) -> None:
    """Add the sample's accuracy to its report, and fail the gate when it is below `min_accuracy`."""
    acc = score(((r["doc_id"], r.get("output")) for r in report["results"]), labels)
    report["accuracy"] = acc
    report["min_accuracy"] = min_accuracy
    if min_accuracy is not None and (acc["accuracy"] is None or acc["accuracy"] < min_accuracy):
        report["passed"] = False


def gate_message(report: dict[str, Any], opts: Any, job_id: str) -> str:
    """Why the gate stopped the job, by its actual cause, and the command that checks the fix. A reply cut at
    max_tokens is a limit to raise, not a prompt to fix; a refusal is the request's, not the prompt's."""
    kinds = [f["kind"] for f in report["failures"]]
    reasons: list[str] = []
    final = report.get("final_rate", report["first_pass_rate"])
    if final < report["min_first_pass"]:
        rate = (
            f"the sample's projected final success {final:.0%} (first pass, plus the retries the run makes itself) "
            f"is below --min-first-pass {report['min_first_pass']:.0%}"
        )
        refused = sum(k in ("invalid_request", "auth", "not_found") for k in kinds)
        if kinds and refused == len(kinds):
            reasons.append(f"{rate}: the provider refused the requests (listed above): check --model and the request")
        else:
            reasons.append(f"{rate}: the prompt fails on its own, not by chance; fix it (failures listed above)")
    acc = report.get("accuracy")
    if acc and report.get("min_accuracy") is not None and (acc["accuracy"] or 0) < report["min_accuracy"]:
        worst = sorted(acc["per_field"].items(), key=lambda kv: kv[1]["accuracy"])[:3]
        fields = ", ".join(f"{n} {f['correct']}/{f['total']}" for n, f in worst)
        reasons.append(
            f"the sample's field accuracy {acc['accuracy'] or 0:.0%} is below --min-accuracy "
            f"{report['min_accuracy']:.0%} (least right: {fields})"
        )
    check = f"freight sample {opts.input} -p PROMPT_FILE"
    if opts.schema is not None:
        check += " -s SCHEMA_FILE"
    check += f" -m {opts.model} --max-tokens {opts.max_tokens}"
    if acc:
        check += f" --expected {acc['expected']}"
    overrides = "--min-first-pass" + (", --min-accuracy" if acc else "") + " or --no-sample overrides the gate"
    return (
        f"{'; '.join(reasons)}; nothing was submitted and job {job_id} is stopped. Check the fix with "
        f"`{check}`, then run again; {overrides}"
    )
