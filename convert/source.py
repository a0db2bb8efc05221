"""Where a checkpoint comes from: a local folder, or a Hugging Face Hub repo fetched into the local cache.

Hub access goes through huggingface_hub, so its cache (HF_HUB_CACHE), HF_HUB_OFFLINE and login all apply.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from localscore.errors import ConversionError

from .checkpoint import weight_files

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Only what a conversion reads is downloaded: never training state, and never both weight formats.
METADATA = ["config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "added_tokens.json"]
SAFETENSORS = ["model*.safetensors", "model.safetensors.index.json"]
PYTORCH_BIN = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def repo_id(source: str) -> str | None:
    """`source` as a Hub repo id ("org/name"), or None when it is a local path."""
    if Path(source).expanduser().exists() or not REPO_ID.fullmatch(source):
        return None
    return source


def resolve(source: str) -> Path:
    """A local folder with the checkpoint `source` names: the folder itself, or the Hub repo's snapshot in the
    local cache, downloading what is missing."""
    repo = repo_id(source)
    if repo is None:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ConversionError(
                f"{source}: no such folder, and not a Hugging Face repo id (org/name); give a checkpoint folder"
            )
        return path
    folder = _snapshot(repo, METADATA + SAFETENSORS)
    if not any(folder.glob("*.safetensors")):  # the repo has .bin weights only (the Deita scorers do)
        folder = _snapshot(repo, METADATA + PYTORCH_BIN)
    return folder


def _snapshot(repo: str, patterns: list[str]) -> Path:
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise ConversionError(
            f"no folder {repo} here, and the Hugging Face repo {repo} is neither in the local cache nor reachable: "
            f"run `localscore convert {repo}` on a connected machine and copy the .gguf here, or copy a populated "
            "Hugging Face cache (HF_HUB_CACHE) here and set HF_HUB_OFFLINE=1"
        ) from None
    except RepositoryNotFoundError:
        raise ConversionError(
            f"{repo} was not found on the Hugging Face Hub (if it is private or gated, log in with `hf auth login`)"
        ) from None
    except (HfHubHTTPError, HFValidationError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConversionError(f"{repo}: download from the Hugging Face Hub failed ({first_line})") from None


def check_output(output: Path, folder: Path) -> None:
    """Refuse an `output` that would replace a file of the checkpoint in `folder`: one the conversion reads, through
    whatever path, symbolic or hard link names it, or any name a checkpoint's files take inside that folder (a
    `model.safetensors` written beside `.bin` weights would be read instead of them next time)."""
    read = [folder / name for name in METADATA if (folder / name).is_file()] + weight_files(folder)
    for path in read:
        if _same(output, path):
            shown = f"{output} is {path}," if os.path.abspath(output) != os.path.abspath(path) else f"{output} is"
            raise ConversionError(f"{shown} a file of the checkpoint being converted; give another output file")
    names = [*METADATA, *SAFETENSORS, *PYTORCH_BIN, *(path.name for path in read)]
    if _same(output.parent, folder) and any(fnmatch(output.name, name) for name in names):
        raise ConversionError(f"{output} would take a checkpoint file's name ({output.name}) in the checkpoint folder "
                              f"{folder}; give another output file")


def _same(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file or folder, however each is reached (a missing `a` is none)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
