"""The README's Python example runs as written: against freight serve here, through the official SDK, which takes
its endpoint from ANTHROPIC_BASE_URL as it would take the real one's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from freight.server.testing import LocalServer

from .conftest import batch_records

ROOT = Path(__file__).parents[2]


def test_the_readme_library_example_runs(tmp_path: Path, server: LocalServer) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- api:example -->\s*```python\n(.+?)\n```", readme, re.S)
    assert block is not None, "the README lost its library example"
    (tmp_path / "example.py").write_text(block.group(1))
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the example's relative paths, from a scratch folder
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        ANTHROPIC_API_KEY=server.api_key,
        ANTHROPIC_BASE_URL=server.base_url,
        FREIGHT_HOME=str(tmp_path / "home"),
        FREIGHT_DB=str(tmp_path / "f.db"),
    )
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("started job_") and "(30 pending)" in lines[0]  # on_notice=print
    # The scripted engine cannot satisfy the schema's date and currency patterns, so the documents end failed after
    # their re-asks; what matters here is that the example ran the whole job and reported it.
    assert re.search(r"^job job_\w+ \(completed\): 30 documents", done.stdout, re.M), done.stdout
    assert re.search(r"^cost: \$\d+\.\d{4} paid", done.stdout, re.M) and "cost by fix: first pass $" in done.stdout
    assert any(line.startswith("{'in_flight': 30} $") for line in lines)  # on_progress saw the batch in flight
    assert (tmp_path / "freight-out").is_dir()
    assert sorted({r["custom_id"] for r in batch_records(server)})[:2] == ["invoice-01", "invoice-01--r1"]
