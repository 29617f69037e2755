"""Peak memory and wall time of `freight run` as the number of documents grows.

    python bench/run_memory.py            # 1,000 and 10,000 documents
    python bench/run_memory.py 500 5000   # other sizes

Each size runs a real job: a JSONL of generated documents, `freight run` in its own process against a `freight serve`
(scripted engine, time scale 0.0002) in another, batches of at most 2,000 requests. The figure that matters is
the runner's peak RSS: it should stay flat as the input grows, because the input is streamed into the store and
every later step pages through the store rather than holding the job in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from freight.server.testing import LocalServer

# The runner, reporting its own peak RSS (KiB on Linux) as it exits.
_MEASURED = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "f'PEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\n"
    "sys.argv = ['freight', *sys.argv[1:]]\n"
    "from freight.cli import main\n"
    "main()\n"
)


def run_size(n: int, root: Path) -> tuple[float, float, dict[str, object]]:
    docs = root / f"docs-{n}.jsonl"
    with docs.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": f"doc-{i:06d}",
                        "text": f"Invoice {i}\nVendor: Acme {i % 97}\nTotal: {i}.50\n" + "Line item. " * (i % 40),
                    }
                )
                + "\n"
            )
    schema = root / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
                "required": ["vendor", "total"],
            }
        )
    )
    with LocalServer(root / f"serve-{n}.db", time_scale=0.0002, subprocess=True, workers=8) as srv:
        env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key}
        t0 = time.monotonic()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEASURED,
                "run",
                str(docs),
                "--schema",
                str(schema),
                "--model",
                "claude-haiku-4-5",
                "--base-url",
                srv.base_url,
                "--db",
                str(root / f"f-{n}.db"),
                "--poll-interval",
                "0.5",
                "--batch-size",
                "2000",
                "--out",
                str(root / f"out-{n}"),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.monotonic() - t0
    peak_kib = int(out.stderr.rsplit("PEAK_RSS_KIB ", 1)[1].split()[0])
    report = json.loads(out.stdout)
    return wall, peak_kib / 1024, report


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'documents':>10} {'wall s':>8} {'docs/s':>8} {'peak RSS MiB':>13} {'succeeded':>10}  failed by reason")
        for n in sizes:
            wall, peak, report = run_size(n, Path(tmp))
            print(
                f"{n:>10,} {wall:>8.1f} {n / wall:>8.0f} {peak:>13.1f} {report['succeeded']:>10,}  "
                f"{report['failed_by_reason'] or '-'}"
            )


if __name__ == "__main__":
    main()
