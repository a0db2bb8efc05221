"""Converting tiny Deita-shaped checkpoints: tensor layout and metadata as llama.cpp expects them, weights
exact against the source, the rotary permutation against llama.cpp's formula, tokenization identical to
SentencePiece, one-line errors, Hub repos from an offline cache, and bounded memory."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
import sentencepiece
import torch
from click.testing import CliRunner

from localscore.cli import cli
from localscore.convert import QUANT_TYPES, convert, gguf_file
from localscore.convert.checkpoint import list_tensors
from localscore.convert.llama import LlamaParams, plan_tensors, rotary_row_order
from localscore.convert.pipeline import FLOAT_TYPES
from localscore.convert.quantize import FTYPES, quantize
from localscore.convert.source import check_output
from localscore.convert.tensor import DType
from localscore.errors import ConversionError
from tests.support.checkpoints import TINY, TOKENIZER_MODEL, Shape, config, populate_hub_cache, write_checkpoint
from tests.support.gguf_reading import field, tensors

REPO = Path(__file__).parents[2]
DATA = Path(__file__).parents[1] / "data"
K = gguf.Keys
Q = gguf.GGMLQuantizationType
TIED = Shape(tie_embeddings=True, kv_heads=4)
BLOCK = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
FLOAT_WEIGHT_TYPES = {"f32": {Q.F32}, "f16": {Q.F16}, "bf16": {Q.BF16}, "q8_0": {Q.Q8_0}, "q6_k": {Q.Q6_K},
                      "q5_k_m": {Q.Q5_K, Q.Q6_K}, "q5_k_s": {Q.Q5_K, Q.Q6_K}, "q4_k_m": {Q.Q4_K, Q.Q6_K},
                      "q4_k_s": {Q.Q4_K, Q.Q5_K, Q.Q6_K}}


def expected_shapes(shape: Shape) -> dict[str, tuple[int, ...]]:
    """What llama.cpp's llama architecture loads, in numpy (rows, columns) order, written out independently."""
    head_dim = shape.hidden // shape.heads
    q, kv, h, ff = shape.heads * head_dim, shape.kv_heads * head_dim, shape.hidden, shape.intermediate
    per_block = {"attn_norm": (h,), "attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h), "attn_output": (h, q),
                 "ffn_norm": (h,), "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff)}
    shapes = {"token_embd.weight": (shape.vocab, h), "output_norm.weight": (h,)}
    if not shape.tie_embeddings:
        shapes["output.weight"] = (shape.vocab, h)
    for i in range(shape.layers):
        shapes.update({f"blk.{i}.{name}.weight": s for name, s in per_block.items()})
    return shapes


@pytest.fixture(scope="module")
def tied(tmp_path_factory) -> Path:
    """Tied embeddings, plain multi-head attention, one f16 safetensors file."""
    return write_checkpoint(tmp_path_factory.mktemp("tied") / "tied-mha", TIED, fmt="safetensors", shards=1,
                            dtype="float16")


@pytest.fixture(scope="module")
def tied_gguf(tmp_path_factory, tied):
    """tied_gguf(quant) -> Path: `tied` converted once per module per quant type."""
    folder = tmp_path_factory.mktemp("tied-gguf")
    return functools.cache(lambda quant: convert(tied, folder / f"tied.{quant}.gguf", quant))


@pytest.fixture(scope="module")
def source(tiny_checkpoint) -> dict[str, torch.Tensor]:
    """The tiny checkpoint's tensors as torch reads them."""
    state = {}
    for shard in sorted(tiny_checkpoint.glob("*.bin")):
        state.update(torch.load(shard, weights_only=True))
    return state


def llama_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, restated: pair each head's halves into adjacent rows."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


def llama_unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    return weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


HF_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
    return {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight",
            "output": "lm_head.weight"}[parts[0]]


# --- layout and metadata ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("quant", QUANT_TYPES)
def test_tensor_names_shapes_and_types(gguf_file, quant):
    found = tensors(gguf_file(quant))
    wanted = expected_shapes(TINY)
    assert {name: tuple(int(n) for n in reversed(t.shape)) for name, t in found.items()} == wanted
    for name, t in found.items():
        expected_types = FLOAT_WEIGHT_TYPES[quant] if len(wanted[name]) == 2 else {Q.F32}
        assert t.tensor_type in expected_types, name


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_tied_embeddings_have_no_output_tensor(tied_gguf, quant):
    found = tensors(tied_gguf(quant))
    assert "output.weight" not in found
    assert {name: tuple(int(n) for n in reversed(t.shape)) for name, t in found.items()} == expected_shapes(TIED)


def test_metadata(gguf_file):
    path = gguf_file("f16")
    arch = "llama"
    assert field(path, K.General.ARCHITECTURE) == arch
    assert field(path, K.General.NAME) == "deita-tiny"
    assert field(path, K.General.FILE_TYPE) == gguf.LlamaFileType.MOSTLY_F16
    assert field(path, "localscore.source") == "deita-tiny"
    assert field(path, K.General.QUANTIZED_BY) == "localscore"
    expected = {K.LLM.CONTEXT_LENGTH: 2048, K.LLM.BLOCK_COUNT: 2, K.LLM.EMBEDDING_LENGTH: 256,
                K.LLM.FEED_FORWARD_LENGTH: 512, K.Attention.HEAD_COUNT: 4, K.Attention.HEAD_COUNT_KV: 2,
                K.Rope.DIMENSION_COUNT: 64, K.LLM.VOCAB_SIZE: 32001}
    for key, value in expected.items():
        assert field(path, key.format(arch=arch)) == value, key
    assert field(path, K.Attention.LAYERNORM_RMS_EPS.format(arch=arch)) == pytest.approx(1e-6)
    assert field(path, K.Rope.FREQ_BASE.format(arch=arch)) == 10000.0
    assert field(path, K.Tokenizer.MODEL) == "llama"
    assert len(field(path, K.Tokenizer.LIST)) == 32001
    ids = {K.Tokenizer.BOS_ID: 1, K.Tokenizer.EOS_ID: 2, K.Tokenizer.UNK_ID: 0, K.Tokenizer.PAD_ID: 32000}
    assert {key: field(path, key) for key in ids} == ids
    assert field(path, K.Tokenizer.ADD_BOS) is True and field(path, K.Tokenizer.ADD_EOS) is False


def test_quantized_file_type(gguf_file):
    assert field(gguf_file("q4_k_m"), K.General.FILE_TYPE) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert field(gguf_file("q8_0"), K.General.FILE_TYPE) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0


@pytest.mark.parametrize("quant", ["q5_k_s", "q4_k_s"])
def test_small_k_mixes_keep_q6_k_for_the_output_tensor_only(gguf_file, quant):
    # Why they can outrun the _m mixes: llama.cpp has no repacked or tiled x86 kernel for Q6_K.
    found = tensors(gguf_file(quant))
    assert {name for name, t in found.items() if t.tensor_type == Q.Q6_K} == {"output.weight"}


def test_quant_types_are_exactly_the_float_and_llama_cpp_types():
    assert QUANT_TYPES == tuple(FLOAT_TYPES) + tuple(FTYPES)


# --- weights ---------------------------------------------------------------------------------------------------

def test_f32_weights_equal_the_bf16_source_exactly(gguf_file, source):
    for name, t in tensors(gguf_file("f32")).items():
        hf = source[hf_name(name)].float().numpy()
        got = np.asarray(t.data)
        if ".attn_q." in name or ".attn_k." in name:
            heads = TINY.heads if ".attn_q." in name else TINY.kv_heads
            assert np.array_equal(got, llama_permute(hf, heads)), name
            got = llama_unpermute(got, heads)
        assert np.array_equal(got, hf), name


def test_bf16_weights_are_the_source_bits(gguf_file, source):
    for name, t in tensors(gguf_file("bf16")).items():
        hf = source[hf_name(name)]
        if t.tensor_type == Q.F32:  # norms
            assert np.array_equal(np.asarray(t.data), hf.float().numpy()), name
            continue
        bits = hf.view(torch.int16).numpy().view(np.uint16)
        heads = {".attn_q.": TINY.heads, ".attn_k.": TINY.kv_heads}
        n_head = next((n for key, n in heads.items() if key in name), None)
        expected = llama_permute(bits, n_head) if n_head else bits
        assert np.array_equal(np.asarray(t.data).view(np.uint16).reshape(expected.shape), expected), name


def test_f16_weights_are_the_source_rounded_once(gguf_file, source):
    t = tensors(gguf_file("f16"))["blk.1.attn_k.weight"]
    hf = source["model.layers.1.self_attn.k_proj.weight"].float().numpy()
    assert np.array_equal(np.asarray(t.data), llama_permute(hf, TINY.kv_heads).astype(np.float16))


def test_f16_safetensors_source_is_copied_exactly(tied_gguf, tied):
    from safetensors.numpy import load_file

    state = load_file(tied / "model.safetensors")
    for name, t in tensors(tied_gguf("f16")).items():
        hf = state[hf_name(name)]
        if ".attn_q." in name or ".attn_k." in name:  # multi-head attention: both use all heads
            hf = llama_permute(hf, TIED.heads)
        assert np.array_equal(np.asarray(t.data), hf.astype(t.data.dtype)), name


def test_k_is_permuted_with_the_kv_head_count():
    """With grouped-query attention q and k need different permutations: the test above could tell."""
    k = np.arange(TINY.kv_heads * 64 * 3).reshape(-1, 3)
    assert not np.array_equal(llama_permute(k, TINY.kv_heads), llama_permute(k, TINY.heads))


def test_encode_in_small_blocks_with_a_row_order(monkeypatch):
    monkeypatch.setattr(gguf_file, "BLOCK_ELEMENTS", 7)  # several rows per block, blocks not dividing the rows
    values = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    order = rotary_row_order(64, 4)
    assert np.array_equal(gguf_file.encode(bits, DType.BF16, Q.F32, "x", order),
                          torch.from_numpy(values).to(torch.bfloat16).float().numpy()[order])
    assert np.array_equal(gguf_file.encode(bits, DType.BF16, Q.BF16, "x", order), bits[order])


def test_float32_to_bf16_rounds_like_torch():
    values = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    values[0, :4] = [np.inf, -np.inf, 3.3895e38, 1e-40]
    want = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(gguf_file.encode(values, DType.F32, Q.BF16, "x"), want)


def test_values_beyond_float16_are_refused():
    with pytest.raises(ConversionError, match="blk.0.ffn_up.weight has values beyond float16's range"):
        gguf_file.encode(np.array([[1.0, 7e4]], np.float32), DType.F32, Q.F16, "blk.0.ffn_up.weight")


@pytest.mark.parametrize("rows,heads", [(8, 1), (256, 4), (128, 2), (4096, 32), (1024, 8)])
def test_rotary_row_order_is_llama_cpp_permutation(rows, heads):
    weights = np.random.default_rng(0).standard_normal((rows, 3))
    assert np.array_equal(weights[rotary_row_order(rows, heads)], llama_permute(weights, heads))


# --- tokenizer -------------------------------------------------------------------------------------------------

def real_texts() -> list[str]:
    texts = []
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts.append(record.get("instruction", ""))
            texts += [part for i in record.get("instances", []) for part in (i["input"], i["output"])]
            texts += record.get("turns", []) + [t for c in record.get("choices", []) for t in c["turns"]]
    return [t for t in texts if t]


def test_llama_cpp_tokenizes_exactly_like_sentencepiece(gguf_file):
    texts = real_texts()
    texts += ["two  spaces", "   leading and trailing   ", "tabs\tand\n\nnewlines\n", "", " ", "x" * 500,
              "héllo wörld, 日本語, 🙂 emoji", "def f(x):\n    return x  # indented",
              "special-looking text stays text: <pad> <s> </s> <unk> [PAD1]", "a<pad>b"]
    assert len(texts) > 1000 and any("  " in t for t in texts) and any(ord(c) > 127 for t in texts for c in t)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_MODEL))
    model = llama_cpp.Llama(model_path=str(gguf_file("q4_k_m")), vocab_only=True, verbose=False)
    mismatches = [t for t in texts
                  if model.tokenize(t.encode(), add_bos=True, special=False) != [1] + processor.encode(t)]
    assert mismatches == []


def test_pad_token_is_the_added_token_at_32000(gguf_file):
    path = gguf_file("f16")
    assert field(path, K.Tokenizer.LIST)[32000] == "<pad>"
    # A control token, so a literal "<pad>" in user text is tokenized as text, as SentencePiece does.
    assert field(path, K.Tokenizer.TOKEN_TYPE)[32000] == gguf.TokenType.CONTROL
    assert field(path, K.Tokenizer.LIST)[29896] == "1"


# --- errors ----------------------------------------------------------------------------------------------------

@pytest.fixture
def broken(tmp_path, tiny_checkpoint):
    """broken(edit) -> a copy of the tiny checkpoint changed by edit(folder); weights are linked, not copied."""
    def make(edit) -> Path:
        folder = tmp_path / "broken"
        folder.mkdir()
        for f in tiny_checkpoint.iterdir():
            (folder / f.name).symlink_to(f) if f.suffix == ".bin" else shutil.copy(f, folder)
        edit(folder)
        return folder
    return make


def edit_config(**changes):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(cfg | changes))
    return edit


def fails(source, tmp_path: Path, match: str, quant: str = "f16") -> str:
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ConversionError, match=match) as error:
        convert(source, out, quant)
    message = str(error.value)
    assert "\n" not in message
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing left: no output, no .partial
    return message


def test_unsupported_architecture(broken, tmp_path):
    folder = broken(edit_config(architectures=["GPT2LMHeadModel"]))
    message = fails(folder, tmp_path, "unsupported architecture GPT2LMHeadModel in config.json")
    assert message.endswith("localscore converts Llama-family scorers (LlamaForCausalLM, MistralForCausalLM)")


def test_missing_tokenizer_model(broken, tmp_path):
    def only_tokenizer_json(folder):
        (folder / "tokenizer.model").unlink()
        (folder / "tokenizer.json").write_text("{}")
    fails(broken(only_tokenizer_json), tmp_path, "unsupported tokenizer .*only tokenizer.json")


def test_unknown_tensor(tmp_path, tied):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "extra"
    shutil.copytree(tied, folder)
    state = load_file(folder / "model.safetensors")
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(TIED.hidden, dtype=torch.float16)
    save_file(state, folder / "model.safetensors")
    fails(folder, tmp_path, "model.safetensors: unknown tensor model.layers.0.self_attn.q_proj.bias")


def test_rotary_buffers_and_tied_lm_head_copies_are_skipped(tiny_checkpoint):
    refs = list_tensors(tiny_checkpoint)
    inv_freq = "model.layers.0.self_attn.rotary_emb.inv_freq"
    refs[inv_freq] = replace(refs["model.norm.weight"], name=inv_freq, shape=(32,))
    names = {p.name for p in plan_tensors(LlamaParams.from_hf_config(config(TINY)), refs)}
    assert names == set(expected_shapes(TINY))
    # lm_head.weight is there but the config ties it: llama.cpp then uses token_embd for the output.
    tied_config = config(TINY) | {"tie_word_embeddings": True}
    assert "output.weight" not in {p.name for p in plan_tensors(LlamaParams.from_hf_config(tied_config), refs)}


def test_shapes_must_match_config(broken, tmp_path):
    folder = broken(edit_config(intermediate_size=1024))
    fails(folder, tmp_path, r"mlp\.\w+_proj\.weight has shape \(\d+, \d+\) but config.json implies")


def test_vocab_larger_than_embedding(broken, tmp_path):
    def extra_token(folder):
        (folder / "added_tokens.json").write_text(json.dumps({"<pad>": 32000, "<extra>": 32001}))
    fails(broken(extra_token), tmp_path, "added token '<extra>' has id 32001, beyond the model's 32001 embedding rows")


def test_unsupported_rope_scaling(broken, tmp_path):
    folder = broken(edit_config(rope_scaling={"type": "dynamic", "factor": 2.0}))
    fails(folder, tmp_path, "rope_scaling .* not supported")


def test_missing_inputs(tmp_path, broken):
    fails(tmp_path / "nowhere", tmp_path, "nowhere: no such folder")
    fails(broken(lambda f: (f / "config.json").unlink()), tmp_path, "has no config.json")
    fails(tmp_path / "broken", tmp_path, "unknown quantization 'q3'", quant="q3")


def test_corrupt_weights_found_mid_write_leave_nothing(broken, tmp_path):
    def corrupt_last_shard(folder):
        shard = folder / "pytorch_model-00002-of-00002.bin"
        data = bytearray(shard.read_bytes())
        shard.unlink()
        data[len(data) // 2] ^= 0xFF  # inside a storage: found by the CRC check when that tensor is read
        shard.write_bytes(bytes(data))
    fails(broken(corrupt_last_shard), tmp_path, "pytorch_model-00002-of-00002.bin is corrupt", quant="q8_0")


def test_failed_quantization_is_one_line(tmp_path):
    (tmp_path / "in.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ConversionError, match=r"could not quantize .*in.gguf to q4_k_m \(status 1\) \(llama.cpp: .*failed"):
        quantize(tmp_path / "in.gguf", tmp_path / "out.gguf", "q4_k_m")
    assert not (tmp_path / "out.gguf").exists()


def test_output_must_be_a_file(tmp_path, tiny_checkpoint):
    with pytest.raises(ConversionError, match="is a folder"):
        convert(tiny_checkpoint, tmp_path, "f16")


# --- the source is never harmed -------------------------------------------------------------------------------

SHARD = "pytorch_model-00001-of-00002.bin"


def reached(folder: Path, name: str, via: str, tmp_path: Path) -> Path:
    """A path to the checkpoint file `folder / name`: itself, a symbolic link or a hard link outside the folder,
    or the name under a link to the folder."""
    target = folder / name
    if via == "path":
        return target
    if via == "folder link":
        (tmp_path / "linked").symlink_to(folder)
        return tmp_path / "linked" / name
    link = tmp_path / f"elsewhere-{name}"
    link.symlink_to(target) if via == "symlink" else link.hardlink_to(target.resolve())
    return link


@pytest.mark.parametrize("name, via", [(SHARD, "path"), (SHARD, "symlink"), (SHARD, "hard link"),
                                       ("pytorch_model.bin.index.json", "folder link"), ("config.json", "hard link"),
                                       ("tokenizer.model", "symlink")])
def test_an_output_that_is_a_file_the_conversion_reads_is_refused(broken, tmp_path, name, via):
    folder = broken(lambda folder: None)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    output = reached(folder, name, via, tmp_path)
    with pytest.raises(ConversionError) as refused:
        convert(folder, output, "f16")
    shown = f"{output} is {folder / name}," if via != "path" else f"{output} is"
    assert str(refused.value) == f"{shown} a file of the checkpoint being converted; give another output file"
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before  # the file unchanged, nothing written
    assert output.samefile(folder / name)  # a link still leads to the file


@pytest.mark.parametrize("name", ["model.safetensors", "model-00001-of-00002.safetensors", "tokenizer.json"])
def test_an_output_under_a_checkpoint_file_name_in_its_folder_is_refused(broken, tmp_path, name):
    """Names the checkpoint does not hold yet but would read instead of its weights (or beside them) next time."""
    folder = broken(lambda folder: None)
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(folder / name), "--quant", "f16"],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output == (f"Error: {folder / name} would take a checkpoint file's name ({name}) in the checkpoint "
                             f"folder {folder}; give another output file\n")
    assert not (folder / name).exists() and not list(folder.glob("*.partial"))


@pytest.mark.parametrize("quant", ["f16", "q8_0"])  # written directly, and through a float intermediate
def test_an_interrupted_conversion_leaves_the_output_as_it_was(tiny_checkpoint, tmp_path, quant):
    output = tmp_path / "m.gguf"
    output.write_bytes(b"an earlier conversion")

    def ctrl_c_mid_write(line: str) -> None:
        if "tensors written" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(tiny_checkpoint, output, quant, log=ctrl_c_mid_write)
    assert list(tmp_path.iterdir()) == [output] and output.read_bytes() == b"an earlier conversion"


def test_an_output_beside_the_checkpoint_files_is_allowed(tiny_checkpoint):
    check_output(tiny_checkpoint / "deita-tiny.q4_k_m.gguf", tiny_checkpoint)
    check_output(tiny_checkpoint / "pytorch_model.gguf", tiny_checkpoint)


# --- hyperparameters -------------------------------------------------------------------------------------------

def test_params_defaults_and_variants():
    base = config(TINY)
    params = LlamaParams.from_hf_config(base)
    assert (params.n_heads, params.n_kv_heads, params.head_dim, params.rope_linear_factor) == (4, 2, 64, None)
    mha = LlamaParams.from_hf_config({k: v for k, v in base.items() if k != "num_key_value_heads"})
    assert mha.n_kv_heads == 4
    linear = LlamaParams.from_hf_config(base | {"rope_scaling": {"type": "linear", "factor": 4.0}})
    assert linear.rope_linear_factor == 4.0
    mistral = LlamaParams.from_hf_config(base | {"architectures": ["MistralForCausalLM"], "sliding_window": 1024})
    assert mistral.context_length == 1024  # attention within the window is exact without sliding support
    assert LlamaParams.from_hf_config(base | {"head_dim": 32}).head_dim == 32
    with pytest.raises(ConversionError, match="num_attention_heads 4 is not a multiple of num_key_value_heads 3"):
        LlamaParams.from_hf_config(base | {"num_key_value_heads": 3})
    with pytest.raises(ConversionError, match="config.json: hidden_size is None"):
        LlamaParams.from_hf_config({k: v for k, v in base.items() if k != "hidden_size"})


# --- Hugging Face Hub ------------------------------------------------------------------------------------------

def test_hub_repo_from_offline_cache(tmp_path, hub_cache, tiny_checkpoint):
    """In this process: the session reads the hub offline from `hub_cache` (tests/conftest.py)."""
    populate_hub_cache(hub_cache, "org/deita-tiny", tiny_checkpoint, commit="a" * 40)
    with pytest.raises(ConversionError) as missing:
        convert("org/not-cached", tmp_path / "never.gguf", "f16")
    path = convert("org/deita-tiny", tmp_path / "hub.gguf", "f16")
    assert field(path, K.General.NAME) == "deita-tiny"
    assert field(path, "localscore.source") == "org/deita-tiny@" + "a" * 40
    assert field(path, K.General.SOURCE_URL) == "https://huggingface.co/org/deita-tiny"
    message = str(missing.value)
    assert "localscore convert org/not-cached" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message and not (tmp_path / "never.gguf").exists()


# --- memory ----------------------------------------------------------------------------------------------------

BIG = Shape(hidden=1536, layers=8, heads=12, kv_heads=4, intermediate=4096)


def write_big_checkpoint(folder: Path, like: Path) -> int:
    """BIG as two bf16 .bin shards of normal noise, one drawn block tiled over every tensor (checkpoints.weights
    would take 10 s, drawing each value 2 s); the tokenizer files come from `like`. Returns the size of the weights
    in bytes."""
    folder.mkdir()
    for name in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(like / name, folder)
    (folder / "config.json").write_text(json.dumps(config(BIG)))
    head_dim = BIG.hidden // BIG.heads
    h, q, kv, ff = BIG.hidden, BIG.heads * head_dim, BIG.kv_heads * head_dim, BIG.intermediate
    shapes = {"model.embed_tokens.weight": (BIG.vocab, h), "model.norm.weight": (h,), "lm_head.weight": (BIG.vocab, h)}
    for i in range(BIG.layers):
        per_block = {"input_layernorm": (h,), "self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h),
                     "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q), "post_attention_layernorm": (h,),
                     "mlp.gate_proj": (ff, h), "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff)}
        shapes.update({f"model.layers.{i}.{name}.weight": s for name, s in per_block.items()})
    torch.manual_seed(0)
    noise = torch.randn(1 << 20, dtype=torch.bfloat16)

    def tensor(shape: tuple[int, ...]) -> torch.Tensor:
        n = int(np.prod(shape))
        return noise.repeat(-(-n // noise.numel()))[:n].clone().reshape(shape)  # a storage of its own, n values

    names = list(shapes)
    weight_map = {}
    for n, group in enumerate((names[0::2], names[1::2]), start=1):
        filename = f"pytorch_model-{n:05d}-of-00002.bin"
        torch.save({k: tensor(shapes[k]) for k in group}, folder / filename)
        weight_map.update(dict.fromkeys(group, filename))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return sum(int(np.prod(s)) * 2 for s in shapes.values())


def peak_rss_code(source: Path, output: Path) -> str:
    """A script printing the process's peak RSS (VmHWM) before and after converting `source` to f16. Not
    ru_maxrss: Linux carries that over exec from the forked parent, here pytest holding the big checkpoint."""
    return (
        "import json, re, sys\n"
        "import localscore.convert.pipeline  # every module a conversion uses, imported before the baseline\n"
        "from localscore.convert import convert\n"
        "def peak():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024\n"
        "before = peak()\n"
        f"convert({str(source)!r}, {str(output)!r}, 'f16')\n"
        "print(json.dumps({'before': before, 'after': peak()}))\n"
    )


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
def test_conversion_memory_is_bounded_by_the_largest_tensor(tmp_path, tiny_checkpoint):
    """Peak memory of a conversion over what its imports take, in a fresh process.

    Measured here (2 cores) on this 600 MB bf16 checkpoint (two 98 MB embedding tensors, the rest <= 13 MB):
    growth 233 MB to f16 (3.4 s), 341 MB to f32, 222 MB to bf16; 229 / 337 MB from one .safetensors file.
    That is the largest tensor's storage + its converted copy + 4M-element float32 blocks: holding the model
    would take 600 MB or more."""
    model_bytes = write_big_checkpoint(tmp_path / "big", tiny_checkpoint)
    largest = BIG.vocab * BIG.hidden * 2
    result = subprocess.run([sys.executable, "-c", peak_rss_code(tmp_path / "big", tmp_path / "big.gguf")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rss = json.loads(result.stdout)
    growth = rss["after"] - rss["before"]
    print(f"model {model_bytes / 1e6:.0f} MB, largest tensor {largest / 1e6:.0f} MB, "
          f"baseline {rss['before'] / 1e6:.0f} MB, growth {growth / 1e6:.0f} MB")
    assert growth < 3 * largest
    assert growth < model_bytes / 2


def test_quantize_keeps_output_and_token_embeddings_at_the_type_asked(gguf_file, tmp_path):
    out = tmp_path / "kept.gguf"
    quantize(gguf_file("bf16"), out, "q4_k_m", output_tensor="q8_0", token_embedding="q8_0")
    found, plain = tensors(out), tensors(gguf_file("q4_k_m"))
    assert found["output.weight"].tensor_type == found["token_embd.weight"].tensor_type == Q.Q8_0
    assert plain["output.weight"].tensor_type == Q.Q6_K and plain["token_embd.weight"].tensor_type == Q.Q4_K
    assert {n: t.tensor_type for n, t in found.items() if n.startswith("blk.")} \
        == {n: t.tensor_type for n, t in plain.items() if n.startswith("blk.")}
