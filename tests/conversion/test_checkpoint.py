"""Reading checkpoints without torch: the same tensors torch.load returns, hostile pickles refused before they
run, damaged files reported as one line naming the file."""

from __future__ import annotations

import collections
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from localscore.convert.checkpoint import list_tensors
from localscore.convert.safetensors_file import list_tensors as list_safetensors
from localscore.convert.tensor import DType, to_float32
from localscore.convert.torch_file import list_tensors as list_bin
from localscore.errors import ConversionError
from tests.support.checkpoints import TINY, write_checkpoint
from tests.support.hostile_pickles import payloads, tensor, torch_zip

REPO = Path(__file__).parents[2]


def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(6, 5)
    parameter = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float16))
    return {
        "bf16": torch.randn(7, 3).to(torch.bfloat16),
        "bf16_specials": torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-40, 3e38], dtype=torch.bfloat16),
        "f16": torch.randn(4, 4, dtype=torch.float16),
        "f32": base,
        "transposed": base.t(),  # non-contiguous, shares base's storage
        "slice": base[2:5, 1:],  # offset and stride into the same storage
        "parameter": parameter,  # pickled through torch._utils._rebuild_parameter
        "empty": torch.zeros(0, 3),
    }


def raw(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values as numpy, bf16 as its raw bits (what the reader returns)."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def assert_same(refs, expected: dict[str, torch.Tensor]) -> None:
    assert sorted(r.name for r in refs) == sorted(expected)
    for ref in refs:
        want = raw(expected[ref.name])
        got = ref.load()
        assert ref.shape == want.shape and got.shape == want.shape and got.dtype == want.dtype, ref.name
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), ref.name  # bit for bit, NaN/-0 included


def test_bin_reader_returns_what_torch_load_returns(tmp_path):
    path = tmp_path / "weights.bin"
    torch.save(state_dict(), path)
    assert_same(list_bin(path), torch.load(path, weights_only=True))


def test_safetensors_reader_returns_what_safetensors_returns(tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.detach().contiguous() for k, v in state_dict().items() if k not in ("transposed", "slice")}, path)
    assert_same(list_safetensors(path), load_file(path))


def test_bf16_widens_exactly():
    values = torch.randn(1000).to(torch.bfloat16)
    assert np.array_equal(to_float32(raw(values), DType.BF16), values.float().numpy())


@pytest.mark.parametrize("fmt,shards", [("bin", 2), ("safetensors", 2), ("safetensors", 1)])
def test_checkpoint_folder_lists_every_tensor_of_every_shard(tmp_path, fmt, shards):
    folder = write_checkpoint(tmp_path / "ckpt", TINY, fmt=fmt, shards=shards)
    refs = list_tensors(folder)
    assert len(refs) == 3 + 9 * TINY.layers
    assert refs["model.embed_tokens.weight"].shape == (TINY.vocab, TINY.hidden)
    assert {r.dtype for r in refs.values()} == {DType.BF16}


def test_safetensors_preferred_when_both_formats_are_present(tmp_path):
    folder = write_checkpoint(tmp_path / "both", TINY, fmt="bin", shards=2)
    write_checkpoint(tmp_path / "st", TINY, fmt="safetensors", shards=1)
    shutil.copy(tmp_path / "st" / "model.safetensors", folder)
    assert {r.file.name for r in list_tensors(folder).values()} == {"model.safetensors"}


# --- hostile pickles -------------------------------------------------------------------------------------------

def test_torch_like_file_is_read(tmp_path):
    """Positive control for the hostile files below: the same layout without a payload loads."""
    (ref,) = list_bin(torch_zip(tmp_path / "m.bin", collections.OrderedDict(w=tensor())))
    assert ref.name == "w" and ref.load().tolist() == [1.5, -2.0]


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", list(payloads(Path("x"))))
def test_hostile_pickle_is_refused_before_it_runs(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    # A normal-looking state dict with the payload after a real tensor.
    state = collections.OrderedDict(ok=tensor(), evil=payloads(marker)[name])
    path = torch_zip(tmp_path / "pytorch_model.bin", state, protocol)
    with pytest.raises(ConversionError) as error:
        list_bin(path)
    message = str(error.value)
    assert str(path) in message and name in message and "\n" not in message
    assert not marker.exists()


def test_hostile_payloads_are_live(tmp_path):
    """The payloads above do run when unpickled normally, so the refusal test proves something."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(payloads(marker)["builtins.exec"]))
    assert marker.exists()


def test_hand_written_inst_opcode_is_refused(tmp_path):
    """Protocol 0's INST opcode imports and calls in one step; it goes through the same gate."""
    marker = tmp_path / "pwned"
    payload = f"(S'touch {marker}'\nios\nsystem\n.".encode()
    path = tmp_path / "m.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    with pytest.raises(ConversionError, match="calls os.system"):
        list_bin(path)
    assert not marker.exists()


# --- damaged and foreign files ---------------------------------------------------------------------------------

@pytest.fixture
def good_bin(tmp_path) -> Path:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.randn(64, 64).to(torch.bfloat16)}, path)
    return path


def refuses(path: Path, match: str, load: bool = False) -> str:
    reader = list_bin if path.suffix == ".bin" else list_safetensors
    with pytest.raises(ConversionError, match=match) as error:
        for ref in reader(path):
            if load:
                ref.load()
    message = str(error.value)
    assert path.name in message and "\n" not in message
    return message


def test_truncated_bin(good_bin):
    data = good_bin.read_bytes()
    good_bin.write_bytes(data[: len(data) // 2])
    refuses(good_bin, "truncated or damaged zip")


def test_corrupted_bin_data_fails_its_crc(good_bin):
    data = bytearray(good_bin.read_bytes())
    start = data.index(b"/data/0") + 200  # past the entry's local header, inside its 8 KB of data
    data[start] ^= 0xFF
    good_bin.write_bytes(bytes(data))
    refuses(good_bin, "corrupt", load=True)


def test_legacy_torch_format_is_explained(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    refuses(path, "legacy .*re-save")


def test_garbage_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello, not a checkpoint" * 10)
    refuses(tmp_path / "a.bin", "not a PyTorch checkpoint")
    (tmp_path / "b.safetensors").write_bytes(b"\xff" * 100)
    refuses(tmp_path / "b.safetensors", "truncated or not a safetensors file")
    (tmp_path / "c.safetensors").write_bytes((10).to_bytes(8, "little") + b"{not json}")
    refuses(tmp_path / "c.safetensors", "corrupt header")


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(100, 100), "b": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    refuses(path, "truncated: b ends at byte")


def test_missing_shard_and_missing_weights(tmp_path):
    folder = write_checkpoint(tmp_path / "ckpt", TINY, fmt="bin", shards=2)
    (folder / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(ConversionError, match="pytorch_model-00002-of-00002.bin, which is missing"):
        list_tensors(folder)
    (folder / "pytorch_model.bin.index.json").unlink()
    with pytest.raises(ConversionError, match="has no weights"):
        list_tensors(folder)


# --- no torch --------------------------------------------------------------------------------------------------

def test_conversion_never_imports_torch(tiny_checkpoint, tmp_path):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "from localscore.convert import convert\n"
        f"convert({str(tiny_checkpoint)!r}, {str(tmp_path / 'm.gguf')!r}, 'f16')\n"
        "assert sys.modules['torch'] is None\n"
        "assert not [m for m in sys.modules if m.startswith(('torch.', 'transformers', 'safetensors'))]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.gguf").is_file()
