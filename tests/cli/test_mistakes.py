"""Each mistake a user makes is caught before the first request: a clear message naming the file, line or flag and what
to do, exit code 2, no traceback - and freight serve's own records show that nothing was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer
from freight.store import Store

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("serve") / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"inv-{i}.txt").write_text(f"vendor: V{i}\ntotal: {i}")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA, indent=2))
    (tmp_path / "prompt.txt").write_text("Extract the vendor.\n\n{document}\n")
    return {"docs": docs, "schema": tmp_path / "schema.json", "prompt": tmp_path / "prompt.txt"}


def freight(tmp_path: Path, server: LocalServer, *args: str, db: bool = True, key: bool = True) -> tuple[int, str]:
    """Run a command against the server; (exit code, stdout and stderr)."""
    env = {"FREIGHT_HOME": str(tmp_path / "home"), "ANTHROPIC_API_KEY": server.api_key if key else ""}
    extra = ["--db", str(tmp_path / "f.db")] if db else []
    result = CliRunner().invoke(app, [*args, *extra, "--base-url", server.base_url], env=env)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


@pytest.fixture
def nothing_sent(server: LocalServer) -> Iterator[None]:
    before = len(server.records())
    yield
    assert len(server.records()) == before, "a request reached the server"


def _run(files: dict[str, Path], *extra: str) -> list[str]:
    return ["run", str(files["docs"]), "-p", str(files["prompt"]), "-s", str(files["schema"]), "-m", "scripted", *extra]


@pytest.mark.usefixtures("nothing_sent")
def test_an_input_folder_that_does_not_exist(tmp_path: Path, server: LocalServer, files: dict[str, Path]) -> None:
    code, out = freight(tmp_path, server, "run", str(tmp_path / "nope"), "-p", str(files["prompt"]), "-m", "scripted")
    assert code == 2, out
    assert f"{tmp_path / 'nope'}: no such file or folder" in out


@pytest.mark.usefixtures("nothing_sent")
def test_a_schema_that_is_json_but_not_a_json_schema(
    tmp_path: Path, server: LocalServer, files: dict[str, Path]
) -> None:
    files["schema"].write_text('{\n  "type": "objekt",\n  "required": ["vendor"]\n}\n')
    code, out = freight(tmp_path, server, *_run(files))
    assert code == 2, out
    assert f"{files['schema']}:2: --schema is not a valid JSON Schema at type: 'objekt' is not valid" in out
    with Store(str(tmp_path / "f.db")) as store:
        assert store.list_jobs() == []  # refused before a job was made


@pytest.mark.usefixtures("nothing_sent")
def test_a_schema_that_is_not_json(tmp_path: Path, server: LocalServer, files: dict[str, Path]) -> None:
    files["schema"].write_text('{\n  "type": "object",\n  "required": ["vendor"],\n}\n')
    code, out = freight(tmp_path, server, *_run(files))
    assert code == 2 and f"{files['schema']}:4: --schema is not valid JSON" in out, out


@pytest.mark.usefixtures("nothing_sent")
def test_a_prompt_without_the_document_placeholder_names_the_near_miss(
    tmp_path: Path, server: LocalServer, files: dict[str, Path]
) -> None:
    files["prompt"].write_text("Extract the vendor\nfrom this invoice: {doc}\n")
    code, out = freight(tmp_path, server, *_run(files))
    assert code == 2, out
    assert f"{files['prompt']}:2: the prompt has no {{document}} placeholder" in out
    assert "It has {doc}: did you mean {document}?" in out


@pytest.mark.usefixtures("nothing_sent")
def test_an_inline_prompt_is_checked_too(tmp_path: Path, server: LocalServer, files: dict[str, Path]) -> None:
    code, out = freight(tmp_path, server, "run", str(files["docs"]), "--prompt-text", "Summarize.", "-m", "scripted")
    assert code == 2 and "--prompt-text: the prompt has no {document} placeholder" in out, out


@pytest.mark.usefixtures("nothing_sent")
def test_a_provider_without_a_model(tmp_path: Path, server: LocalServer, files: dict[str, Path]) -> None:
    code, out = freight(tmp_path, server, "run", str(files["docs"]), "-p", str(files["prompt"]))
    assert code == 2, out
    assert "name a --model for anthropic" in out


@pytest.mark.usefixtures("nothing_sent")
def test_a_store_url_freight_cannot_use_and_its_password_is_not_shown(
    tmp_path: Path, server: LocalServer, files: dict[str, Path]
) -> None:
    code, out = freight(tmp_path, server, *_run(files, "--db", "mysql://me:s3cret@db.example/freight"), db=False)
    assert code == 2, out
    assert "--db mysql://me:***@db.example/freight: freight stores its state in SQLite" in out
    assert "s3cret" not in out and "MySQLdb" not in out


@pytest.mark.usefixtures("nothing_sent")
def test_a_store_path_in_a_folder_that_does_not_exist(
    tmp_path: Path, server: LocalServer, files: dict[str, Path]
) -> None:
    db = tmp_path / "typo" / "f.db"
    code, out = freight(tmp_path, server, *_run(files, "--db", str(db)), db=False)
    assert code == 2 and f"the folder {db.parent} does not exist" in out, out
    assert not db.parent.exists()
    result = CliRunner().invoke(app, ["jobs", "--db", str(tmp_path / "nostore.db")])
    code, out = result.exit_code, result.output
    assert code == 0 and "no jobs yet" in out and "note: no store at" in out, out
    assert not (tmp_path / "nostore.db").exists()  # a listing leaves no empty store behind
    result = CliRunner().invoke(app, ["status", "job_x", "--db", str(tmp_path / "nostore.db")])
    assert result.exit_code == 2 and "no store there" in result.output, result.output


@pytest.mark.usefixtures("nothing_sent")
def test_a_broken_csv_and_a_repeated_custom_id(tmp_path: Path, server: LocalServer, files: dict[str, Path]) -> None:
    csv_file = tmp_path / "docs.csv"
    csv_file.write_text('id,text\n1,"fine"\n2,"never closed\n3,more\n')
    code, out = freight(tmp_path, server, "run", str(csv_file), "-p", str(files["prompt"]), "-m", "scripted")
    assert code == 2 and f"{csv_file}:3: not valid CSV" in out, out
    line = json.dumps({"custom_id": "a", "params": {"model": "scripted", "max_tokens": 9, "messages": []}})
    ok = json.dumps(
        {
            "custom_id": "a",
            "params": {"model": "scripted", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]},
        }
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(f"{ok}\n{ok}\n")
    code, out = freight(tmp_path, server, "run", str(batch), "-m", "scripted")
    assert code == 2 and f"{batch}:2: custom_id 'a' already appears on line 1" in out, out
    batch.write_text(f"{line}\n")
    code, out = freight(tmp_path, server, "run", str(batch), "-m", "scripted")
    assert code == 2 and f"{batch}:1 (custom_id a): not a valid batch request" in out, out


@pytest.mark.usefixtures("nothing_sent")
def test_check_validates_everything_and_sends_nothing(
    tmp_path: Path, server: LocalServer, files: dict[str, Path]
) -> None:
    code, out = freight(tmp_path, server, *_run(files, "--check"))
    assert code == 0, out
    assert "3 documents" in out and "nothing was sent" in out
    with Store(str(tmp_path / "f.db")) as store:
        assert store.list_jobs() == []
    files["prompt"].write_text("no placeholder")
    code, out = freight(tmp_path, server, *_run(files, "--check"))
    assert code == 2 and "no {document} placeholder" in out, out


def test_provider_help_lists_every_registered_provider(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "anthropic | azure | gemini | openai" in result.output
