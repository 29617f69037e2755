"""Scripted embeddings, shared by the OpenAI and Gemini dialects: a deterministic unit vector per (model, text).

Seeded by a hash of the model and the text, drawn from a Gaussian and unit-normalized, then rounded to float32 (what
the services send): the same text always gives the same vector, and different texts nearly orthogonal ones, so a test
can tell every document's vector apart and find it again.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct


def vector(model: str, text: str, dims: int) -> list[float]:
    """The scripted embedding of `text`: seeded by a hash of model and text, unit length, rounded to float32."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [float(struct.unpack("<f", struct.pack("<f", x / norm))[0]) for x in raw]
