"""Checks a quickstart run's results.jsonl against expected.jsonl, as a user would: did every invoice succeed, and
how many of the extracted fields are right.

    python examples/invoices/check.py freight-out/JOB/results.jsonl [--min-accuracy 0.5]

Exit 0 when every document of the example succeeded and the field accuracy is at least --min-accuracy; exit 1 with
what was wrong otherwise. `.ci/run` runs it after the README's first command; `bench/engine.py` scores its layouts
with the same `field_accuracy`, so the README's figures and CI's gate count fields the same way.

The fields scored are the five scalars of schema.json (vendor, invoice_number, date, currency, total): a string is
right when it equals the true value ignoring case and surrounding spaces, the total when it is within a cent.
line_items are not scored (their descriptions are free text the schema does not pin down).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIELDS = ("vendor", "invoice_number", "date", "currency", "total")


def expected_by_id() -> dict[str, dict[str, Any]]:
    """The true fields of each invoice, by document id (the file name without its suffix, as `freight run` names it)."""
    rows = [json.loads(line) for line in (HERE / "expected.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {Path(row["file"]).stem: row for row in rows}


def right_fields(got: Any, want: dict[str, Any]) -> int:
    """How many of FIELDS `got` (a parsed reply, or anything else) has right."""
    if not isinstance(got, dict):
        return 0
    right = 0
    for field in FIELDS:
        value = got.get(field)
        if field == "total":
            right += isinstance(value, int | float) and abs(float(value) - float(want[field])) < 0.01
        else:
            right += isinstance(value, str) and value.strip().lower() == str(want[field]).strip().lower()
    return right


def field_accuracy(outputs: dict[str, Any], expected: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(right, total) over FIELDS of every expected document; a document with no output scores 0 of 5."""
    right = sum(right_fields(outputs.get(doc_id), want) for doc_id, want in expected.items())
    return right, len(FIELDS) * len(expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("results", type=Path, help="results.jsonl written by `freight run` (its --out folder)")
    parser.add_argument("--min-accuracy", type=float, default=0.0, help="fail below this share of fields right")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"{args.results}: no such file; give the results.jsonl of the quickstart's run", file=sys.stderr)
        return 1
    expected = expected_by_id()
    lines = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_id = {line["id"]: line for line in lines}
    problems = [f"{doc_id}: missing from {args.results}" for doc_id in expected if doc_id not in by_id]
    problems += [
        f"{doc_id}: {line['status']} ({(line.get('error') or {}).get('message', 'no error recorded')})"
        for doc_id, line in by_id.items()
        if line["status"] != "succeeded"
    ]
    succeeded = sum(line["status"] == "succeeded" for line in lines)
    right, total = field_accuracy({k: v.get("output") for k, v in by_id.items()}, expected)
    accuracy = right / total if total else 0.0
    print(f"{succeeded}/{len(expected)} documents succeeded")
    print(f"field accuracy: {accuracy:.0%} ({right}/{total} fields of {', '.join(FIELDS)} right)")
    if accuracy < args.min_accuracy:
        problems.append(f"field accuracy {accuracy:.1%} is below the documented floor of {args.min_accuracy:.0%}")
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
