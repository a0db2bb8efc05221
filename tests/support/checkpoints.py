"""Build small Deita-shaped Llama checkpoints for tests and benchmarks: the real Llama vocabulary with
<pad> = 32000 (so 32001 rows and the real score-token ids), seeded random weights, written the way the
official scorers are (bf16 `pytorch_model-0000N-of-0000M.bin` shards + index) or as safetensors.

The weights are scaled so the six score logits differ by a few units between prompts: with the usual
0.02 init every score would sit at ~3.5 and a parity test could not tell a broken converter from a good one.
Larger gains spread the scores further but make the model amplify float rounding (gains of 2 and 4 put the f32
engine 9e-5 from the reference on some pairs); 1.5 and 3.5 keep it within 1e-5 with scores spread over 1.1-5.4.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKENIZER_MODEL = FIXTURES / "llama-spm" / "tokenizer.model"
SCORE_TOKEN_IDS = (29896, 29906, 29941, 29946, 29945, 29953)


@dataclass(frozen=True)
class Shape:
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    vocab: int = 32001
    max_positions: int = 2048
    tie_embeddings: bool = False
    rms_norm_eps: float = 1e-6


TINY = Shape()
# Large enough that matrix work dominates; dims are multiples of 256 so every K-quant applies.
BENCH = Shape(hidden=1024, layers=8, heads=16, kv_heads=16, intermediate=2816)


def config(shape: Shape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.max_positions,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "vocab_size": shape.vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 32000,
        "tie_word_embeddings": shape.tie_embeddings,
        "torch_dtype": "bfloat16",
    }


def tensor_plan(shape: Shape) -> list[tuple[str, tuple[int, ...], str, float]]:
    """(name, HF shape (out_features, in_features), kind, gain) of every tensor, in the order they are drawn.
    kind is "embed" (unit normal), "linear" (normal * gain / sqrt(in_features)) or "norm" (1 + 0.1 * normal)."""
    head_dim = shape.hidden // shape.heads
    plan = [("model.embed_tokens.weight", (shape.vocab, shape.hidden), "embed", 1.0)]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        plan += [
            (p + "input_layernorm.weight", (shape.hidden,), "norm", 1.0),
            # A larger q/k gain gives peaked attention, so the last position depends on what the prompt says.
            (p + "self_attn.q_proj.weight", (shape.heads * head_dim, shape.hidden), "linear", 1.5),
            (p + "self_attn.k_proj.weight", (shape.kv_heads * head_dim, shape.hidden), "linear", 1.5),
            (p + "self_attn.v_proj.weight", (shape.kv_heads * head_dim, shape.hidden), "linear", 1.0),
            (p + "self_attn.o_proj.weight", (shape.hidden, shape.heads * head_dim), "linear", 1.0),
            (p + "post_attention_layernorm.weight", (shape.hidden,), "norm", 1.0),
            (p + "mlp.gate_proj.weight", (shape.intermediate, shape.hidden), "linear", 1.0),
            (p + "mlp.up_proj.weight", (shape.intermediate, shape.hidden), "linear", 1.0),
            (p + "mlp.down_proj.weight", (shape.hidden, shape.intermediate), "linear", 1.0),
        ]
    plan.append(("model.norm.weight", (shape.hidden,), "norm", 1.0))
    if not shape.tie_embeddings:
        plan.append(("lm_head.weight", (shape.vocab, shape.hidden), "linear", 3.5))
    return plan


def weights(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights in Hugging Face names and layout (out_features, in_features)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, dims, kind, gain in tensor_plan(shape):
        x = rng.standard_normal(dims)
        if kind == "linear":
            x = x * gain / np.sqrt(dims[1])
        elif kind == "norm":
            x = 1.0 + 0.1 * x
        tensors[name] = x.astype(np.float32)
    return tensors


def write_tokenizer_files(folder: Path) -> None:
    shutil.copyfile(TOKENIZER_MODEL, folder / "tokenizer.model")
    (folder / "added_tokens.json").write_text(json.dumps({"<pad>": 32000}))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                    "model_max_length": 2048, "legacy": True})
    )


def write_checkpoint(folder: Path, shape: Shape = TINY, *, fmt: str = "bin", shards: int = 2,
                     dtype: str = "bfloat16", seed: int = 0, trained: dict[str, np.ndarray] | None = None) -> Path:
    """Write a Hugging Face checkpoint folder. fmt is "bin" (torch zip pickles, like the Deita release)
    or "safetensors"; dtype is a torch dtype name; `trained` (float32 arrays in Hugging Face names) replaces
    the seeded random weights. Needs torch (a test/benchmark dependency only)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    cfg = config(shape) | {"torch_dtype": dtype}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    write_tokenizer_files(folder)

    torch_dtype = getattr(torch, dtype)
    source = weights(shape, seed) if trained is None else trained
    tensors = {k: torch.from_numpy(v).to(torch_dtype) for k, v in source.items()}
    names = list(tensors)
    groups = [names[i::shards] for i in range(shards)]
    ext = "bin" if fmt == "bin" else "safetensors"
    stem = "pytorch_model" if fmt == "bin" else "model"
    weight_map = {}
    for n, group in enumerate(groups, start=1):
        filename = f"{stem}-{n:05d}-of-{shards:05d}.{ext}" if shards > 1 else f"{stem}.{ext}"
        part = {k: tensors[k].contiguous() for k in group}
        if fmt == "bin":
            torch.save(part, folder / filename)
        else:
            from safetensors.torch import save_file

            save_file(part, str(folder / filename), metadata={"format": "pt"})
        weight_map.update({k: filename for k in group})
    if shards > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    return folder


def populate_hub_cache(cache: Path, repo_id: str, checkpoint: Path, commit: str = "0" * 40) -> Path:
    """Lay out `checkpoint` the way huggingface_hub caches a downloaded repo, so that code that downloads can be
    tested offline (HF_HUB_OFFLINE=1, HF_HUB_CACHE=cache). Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
