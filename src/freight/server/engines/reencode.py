"""A known model file re-encoded, once, to the llama.cpp file type that runs fastest on a CPU.

The default model ships as Q4_1 (4 bits a weight). llama.cpp's CPU kernels run Q8_0 faster on the cores measured
here: a prompt decodes in 3.8 ms a token on one core against 6.8, and the quickstart's 30 invoices took 99 CPU
seconds against 124 (docs/engines.md, bench/engine.py). Q8_0 holds each 4-bit weight to within 1/254 of its block's
range, so the model is the same one, at 145 MB instead of 93.

The re-encoded file is made by llama.cpp's own `llama_model_quantize` from the checked file and kept in
`$FREIGHT_HOME/models`, named by the source's sha256, the target type and llama-cpp-python's version, so it is made
once per machine and every later load reads the same bytes (replies stay the same run after run). It is written to a
temporary name and renamed, so a server killed while making it, or two servers making it at once, never leave a
partial file under the final name.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from freight.server.engines.llama_model import quiet
from freight.server.engines.modelfiles import ModelFile


def loadable(model: ModelFile, folder: Path, lib: Any) -> Path:
    """The file to load: `model.path` itself, or its re-encoding (made now if it is not in `folder` yet)."""
    if model.load_as is None or model.sha256 is None:
        return model.path
    version = getattr(lib, "__version__", "0")
    target = folder / f"{model.path.stem}.{model.sha256[:16]}.{model.load_as.lower()}.llama-cpp-{version}.gguf"
    if target.is_file():
        return target
    ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{model.load_as.upper()}", None)
    if ftype is None:
        return model.path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=folder)
        os.close(fd)
    except OSError as exc:
        print(f"freight: cannot write {folder} ({exc}); loading {model.path.name} as it is", file=sys.stderr)
        return model.path
    try:
        quiet(lib)  # llama.cpp logs every tensor it converts
        params = lib.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 1  # the bytes do not depend on it; one thread leaves the other cores to the server
        if lib.llama_model_quantize(str(model.path).encode(), scratch.encode(), params) != 0:
            print(f"freight: llama.cpp could not re-encode {model.path.name}; loading it as it is", file=sys.stderr)
            return model.path
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target
