"""A GGUF's content fingerprint: what identifies a model (scorer or embedder) in embedding cache keys and in what an
output records of its producer, computed from the file alone (no llama.cpp, no load), so a Ray driver or `merge`
gets the same value as the process that loaded the model.

Hashing a whole 7B file costs seconds to minutes (it is read from disk); the fingerprint reads a fixed ~20 MB:
the size, both ends (the header with every metadata key and tensor shape, the vocabulary, the first and last
tensors) and SAMPLES evenly spaced blocks in between, so every tensor larger than size / SAMPLES is sampled at
least once. Two different conversions, quantizations or fine-tunes of a model differ in all of these (a fine-tune,
LoRA merges included, changes every element of the matrices it touches); two files agree only when they hold the
same header, ends and sampled blocks."""

from __future__ import annotations

import hashlib
import os

END_BYTES = 8 << 20
SAMPLES = 1024
SAMPLE_BYTES = 4096


def fingerprint(path: str | os.PathLike) -> str:
    """The sha256 (hex) of the file's size, its first and last END_BYTES and SAMPLES blocks in between."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        digest.update(size.to_bytes(8, "little"))
        middle = size - 2 * END_BYTES
        blocks = [(0, END_BYTES)]
        if middle > 0:
            blocks += [(END_BYTES + middle * index // SAMPLES, SAMPLE_BYTES) for index in range(SAMPLES)]
        blocks.append((max(0, size - END_BYTES), END_BYTES))
        for offset, length in blocks:
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()
