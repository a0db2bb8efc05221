"""Weights files that attack their reader: pickles that call os.system, exec, eval or Popen when unpickled, inside
the zip layout torch.save writes."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import torch


class Call:
    """Pickles as a call of `function(*args)`: what a malicious weights file does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> dict[str, object]:
    """Global the pickle refers to -> object whose unpickling would create `marker`."""
    return {
        f"{os.system.__module__}.system": Call(os.system, f"touch {marker}"),
        "builtins.exec": Call(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Call(eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Call(subprocess.Popen, ["touch", str(marker)]),
    }


class Storage:
    """Pickles as a persistent id, the way torch.save refers to a tensor's storage."""


class TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 2) if isinstance(obj, Storage) else None


def torch_zip(path: Path, state: object, protocol: int = 2) -> Path:
    """A file laid out exactly like torch.save's zip, around the pickle of `state`. Its one storage holds
    two float32 values: Call(_rebuild_tensor_v2, Storage(), 0, (2,), (1,), False, OrderedDict()) is a tensor."""
    buffer = io.BytesIO()
    TorchLikePickler(buffer, protocol=protocol).dump(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", np.array([1.5, -2.0], np.float32).tobytes())
        z.writestr("archive/version", "3\n")
    return path


def tensor() -> Call:
    return Call(torch._utils._rebuild_tensor_v2, Storage(), 0, (2,), (1,), False, collections.OrderedDict())
