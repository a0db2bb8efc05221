"""One conversion end to end: checkpoint -> float GGUF -> quantized GGUF, each file written under a temporary
name next to the output so that a failed conversion never leaves a file at the output path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from localscore.errors import ConversionError
from localscore.forms.durable import publish_written

from . import gguf_file, source
from .checkpoint import list_tensors
from .gguf_file import OutTensor
from .llama import ARCH_NAME, LlamaParams, PlannedTensor, plan_tensors, rotary_row_order
from .quantize import quantize
from .tensor import DType
from .vocab import Vocab, load_vocab

Q = gguf.GGMLQuantizationType
# Float outputs: the type of 2-D weights (1-D norms stay F32, as llama.cpp expects) and the file type.
FLOAT_TYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
QUANTIZED_BY = "localscore"
# Which checkpoint a file was made from: "org/name@commit" for a Hub snapshot, else the folder's name.
SOURCE_KEY = "localscore.source"
HUB_URL = "https://huggingface.co/"


@dataclass(frozen=True)
class _Model:
    """Everything read from the checkpoint before writing starts."""

    source_name: str
    folder: Path
    params: LlamaParams
    vocab: Vocab
    planned: list[PlannedTensor]


def run(source_name: str, output: Path, quant: str, log: Callable[[str], None]) -> Path:
    """Convert the checkpoint `source_name` (folder or Hub repo id) to `output` as `quant`; return `output`."""
    if output.is_dir():
        raise ConversionError(f"{output} is a folder; give the .gguf file to write, e.g. {output / 'model.gguf'}")
    folder = source.resolve(source_name)
    source.check_output(output, folder)
    config = _read_config(folder)
    params = LlamaParams.from_hf_config(config)
    model = _Model(source_name, folder, params, load_vocab(folder, config, params.vocab_size),
                   plan_tensors(params, list_tensors(folder)))
    log(f"read {folder}: {params.n_layers} layers, {len(model.planned)} tensors, {len(model.vocab.tokens)} tokens")

    # Quantizing starts from a float file: bf16 keeps a bf16 checkpoint exact, f16 serves f16 and f32 ones.
    bf16_source = all(p.source.dtype is DType.BF16 for p in model.planned if len(p.source.shape) == 2)
    float_type = quant if quant in FLOAT_TYPES else "bf16" if bf16_source else "f16"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial_output = output.with_name(output.name + ".partial")
    intermediate = output.with_name(f"{output.name}.{float_type}.partial")
    try:
        if quant in FLOAT_TYPES:
            _write_float(partial_output, model, float_type, log)
        else:
            tensors = _write_float(intermediate, model, float_type, log)
            log(f"quantizing to {quant}")
            quantize(intermediate, partial_output, quant)
            gguf_file.verify(partial_output, tensors, check_types=False)
        publish_written(partial_output, output)
    finally:
        partial_output.unlink(missing_ok=True)
        intermediate.unlink(missing_ok=True)
    log(f"wrote {output} ({output.stat().st_size / 1e9:.2f} GB)")
    return output


def _write_float(path: Path, model: _Model, float_type: str, log: Callable[[str], None]) -> list[OutTensor]:
    weight_type, file_type = FLOAT_TYPES[float_type]
    tensors = []
    for p in model.planned:
        tensor_type = weight_type if len(p.source.shape) == 2 else Q.F32
        tensors.append(OutTensor(p.name, p.source.shape, tensor_type, partial(_read, p, tensor_type)))
    writer = gguf.GGUFWriter(path, ARCH_NAME)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_quantized_by(QUANTIZED_BY)
    _add_provenance(writer, model.source_name, model.folder)
    model.params.add_to(writer)
    model.vocab.add_to(writer)
    log(f"writing {path.name} ({float_type})")
    gguf_file.write(writer, tensors, log)
    gguf_file.verify(path, tensors)
    return tensors


def _read(planned: PlannedTensor, target: gguf.GGMLQuantizationType) -> np.ndarray:
    ref = planned.source
    rows = rotary_row_order(ref.shape[0], planned.rotary_heads) if planned.rotary_heads else None
    return gguf_file.encode(ref.load(), ref.dtype, target, ref.name, rows)


def _add_provenance(writer: gguf.GGUFWriter, source_name: str, folder: Path) -> None:
    """Name the model after its repo or folder and record where it came from (for a Hub snapshot, the commit)."""
    repo = source.repo_id(source_name)
    if repo is None:
        writer.add_name(folder.resolve().name)
        writer.add_string(SOURCE_KEY, folder.resolve().name)
        return
    writer.add_name(repo.split("/")[-1])
    writer.add_source_url(HUB_URL + repo)
    commit = folder.name if folder.parent.name == "snapshots" else None
    writer.add_string(SOURCE_KEY, f"{repo}@{commit}" if commit else repo)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{folder} has no config.json; it is not a Hugging Face checkpoint folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path} is not valid JSON ({error}); download it again") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path} should hold a JSON object")
    return config
