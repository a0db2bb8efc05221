"""Where a checkpoint comes from: a local folder, or a Hugging Face Hub repo fetched into the local cache.

Hub access goes through huggingface_hub, so its cache (HF_HUB_CACHE), HF_HUB_OFFLINE and login all apply.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from localscore.errors import ConversionError

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
