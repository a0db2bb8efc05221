"""A Hugging Face checkpoint folder's weights, listed without reading them and read one tensor at a time.

No torch: .safetensors files are parsed by `safetensors_file`, .bin files by `torch_file`'s restricted
unpickler. Listing a checkpoint reads only headers and pickles, so every file is checked (truncation, offsets,
dtypes) before a single output byte is written; `TensorRef.load()` then reads just that tensor, which keeps
a conversion's memory near the size of its largest tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

from localscore.errors import ConversionError

from . import safetensors_file, torch_file
from .tensor import TensorRef

# Single-file names and their sharded index; safetensors first: it is the safer and faster format.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_SUFFIX = ".index.json"


def list_tensors(folder: Path) -> dict[str, TensorRef]:
    """Every tensor of the checkpoint in `folder`, by Hugging Face name, checked but not read."""
    files, _, index = _weight_files(folder)
    refs: dict[str, TensorRef] = {}
    for path in files:
        reader = safetensors_file if path.suffix == ".safetensors" else torch_file
        for ref in reader.list_tensors(path):
            if ref.name in refs:
                raise ConversionError(
                    f"{path}: tensor {ref.name} is also in {refs[ref.name].file.name}; the checkpoint mixes two copies"
                )
            refs[ref.name] = ref
    for name, filename in index.items():
        if name not in refs or refs[name].file.name != filename:
            raise ConversionError(
                f"{folder}: the index puts {name} in {filename}, which does not hold it; download the checkpoint again"
            )
    return refs


def weight_files(folder: Path) -> list[Path]:
    """Every file `list_tensors` reads: the weight files and, for a sharded checkpoint, its index."""
    files, index_path, _ = _weight_files(folder)
    return files if index_path is None else [*files, index_path]


def _weight_files(folder: Path) -> tuple[list[Path], Path | None, dict[str, str]]:
    """The weight files to read and, for a sharded checkpoint, its index file and map (tensor name -> file name)."""
    for single in WEIGHT_FILES:
        index_path = folder / (single + INDEX_SUFFIX)
        if index_path.is_file():
            weight_map = _read_index(index_path)
            files = [folder / name for name in sorted(set(weight_map.values()))]
            for path in files:
                if not path.is_file():
                    raise ConversionError(
                        f"{index_path.name} names {path.name}, which is missing from {folder}; download it"
                    )
            return files, index_path, weight_map
        if (folder / single).is_file():
            return [folder / single], None, {}
    names = ", ".join(f"{single} or {single}{INDEX_SUFFIX}" for single in WEIGHT_FILES)
    raise ConversionError(f"{folder} has no weights ({names}); download the checkpoint's weight files into it")


def _read_index(path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConversionError(f"{path} is not a checkpoint index (JSON with a weight_map): {error}") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "/" not in v and "\\" not in v for k, v in weight_map.items()
    ):
        raise ConversionError(f"{path}: weight_map must map tensor names to file names in the same folder")
    return weight_map
