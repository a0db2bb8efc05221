"""The Llama architecture: config.json -> hyperparameters and GGUF metadata, Hugging Face tensor names ->
GGUF names and shapes, and the q/k row permutation llama.cpp's rotary embedding expects."""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np

from localscore.errors import ConversionError

from .tensor import TensorRef

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
ARCH = gguf.MODEL_ARCH.LLAMA
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]
T = gguf.MODEL_TENSOR
# Buffers some checkpoints carry that llama.cpp recomputes from the metadata.
IGNORED = (T.ATTN_ROT_EMBD,)


@dataclass(frozen=True)
class LlamaParams:
    """The hyperparameters of a Llama-family model, read from its config.json; defaults as in transformers."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_linear_factor: float | None
    tie_embeddings: bool

    @classmethod
    def from_hf_config(cls, config: dict) -> LlamaParams:
        architectures = config.get("architectures") or [config.get("model_type", "(none)")]
        if len(architectures) != 1 or architectures[0] not in ARCHITECTURES:
            raise ConversionError(
                f"unsupported architecture {', '.join(map(str, architectures))} in config.json; localscore converts "
                f"Llama-family scorers ({', '.join(ARCHITECTURES)})"
            )
        hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
        head_dim = config.get("head_dim") or (hidden // heads if hidden % heads == 0 else None)
        if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
            raise ConversionError(
                f"config.json: no even head_dim follows from hidden_size {hidden} and num_attention_heads {heads}"
            )
        kv_heads = config.get("num_key_value_heads") or heads
        if not isinstance(kv_heads, int) or heads % kv_heads:
            raise ConversionError(
                f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )
        if config.get("hidden_act", "silu") != "silu":
            raise ConversionError(f"config.json: hidden_act {config['hidden_act']} is not supported (Llama uses silu)")
        context = _int(config, "max_position_embeddings")
        window = config.get("sliding_window")
        if isinstance(window, int) and window < context:
            # llama.cpp's llama architecture has no sliding window. Within the window full attention is the
            # same computation, so capping the context keeps results exact instead of silently wrong.
            context = window
        return cls(
            vocab_size=_int(config, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_int(config, "intermediate_size"),
            n_layers=_int(config, "num_hidden_layers"),
            n_heads=heads,
            n_kv_heads=kv_heads,
            head_dim=head_dim,
            context_length=context,
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            rope_linear_factor=_rope_linear_factor(config.get("rope_scaling")),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """Write the hyperparameters as GGUF metadata."""
        writer.add_vocab_size(self.vocab_size)
        writer.add_context_length(self.context_length)
        writer.add_embedding_length(self.hidden_size)
        writer.add_feed_forward_length(self.intermediate_size)
        writer.add_block_count(self.n_layers)
        writer.add_head_count(self.n_heads)
        writer.add_head_count_kv(self.n_kv_heads)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_rope_dimension_count(self.head_dim)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(self.rms_norm_eps)
        if self.rope_linear_factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(self.rope_linear_factor)

    def expected_tensors(self) -> dict[str, tuple[gguf.MODEL_TENSOR, tuple[int, ...]]]:
        """GGUF tensor name -> (kind, shape in Hugging Face (rows, columns) order), in the order they are written."""
        q_rows, kv_rows = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        block = {T.ATTN_NORM: (self.hidden_size,), T.ATTN_Q: (q_rows, self.hidden_size),
                 T.ATTN_K: (kv_rows, self.hidden_size), T.ATTN_V: (kv_rows, self.hidden_size),
                 T.ATTN_OUT: (self.hidden_size, q_rows), T.FFN_NORM: (self.hidden_size,),
                 T.FFN_GATE: (self.intermediate_size, self.hidden_size),
                 T.FFN_UP: (self.intermediate_size, self.hidden_size),
                 T.FFN_DOWN: (self.hidden_size, self.intermediate_size)}
        tensors = {_weight_name(T.TOKEN_EMBD): (T.TOKEN_EMBD, (self.vocab_size, self.hidden_size))}
        for bid in range(self.n_layers):
            tensors.update({_weight_name(kind, bid): (kind, shape) for kind, shape in block.items()})
        tensors[_weight_name(T.OUTPUT_NORM)] = (T.OUTPUT_NORM, (self.hidden_size,))
        if not self.tie_embeddings:  # tied: llama.cpp reuses token_embd when output.weight is absent
            tensors[_weight_name(T.OUTPUT)] = (T.OUTPUT, (self.vocab_size, self.hidden_size))
        return tensors


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the GGUF file: its name, where its data comes from, and the rotary permutation to apply."""

    name: str
    source: TensorRef
    rotary_heads: int | None


def plan_tensors(params: LlamaParams, refs: dict[str, TensorRef]) -> list[PlannedTensor]:
    """Match the checkpoint's tensors to the GGUF tensors `params` calls for, checking every name and shape."""
    expected = params.expected_tensors()
    name_map = gguf.TensorNameMap(ARCH, params.n_layers)
    sources: dict[str, TensorRef] = {}
    for hf_name, ref in refs.items():
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is not None and (found[0] in IGNORED or found[0] is T.OUTPUT and params.tie_embeddings):
            continue
        if found is None or found[1] not in expected:
            raise ConversionError(
                f"{ref.file.name}: unknown tensor {hf_name}; localscore converts plain Llama checkpoints "
                "(no biases, adapters or extra heads)"
            )
        name = found[1]
        if name in sources:
            raise ConversionError(f"{ref.file.name}: {hf_name} and {sources[name].name} are both {name}")
        shape = expected[name][1]
        if ref.shape != shape:
            raise ConversionError(
                f"{ref.file.name}: {hf_name} has shape {ref.shape} but config.json implies {shape}; "
                "the weights and config.json do not belong together"
            )
        if not ref.dtype.is_float:
            raise ConversionError(f"{ref.file.name}: {hf_name} is {ref.dtype.name}, not a float tensor")
        sources[name] = ref
    missing = [name for name in expected if name not in sources]
    if missing:
        raise ConversionError(
            f"the checkpoint lacks {len(missing)} weight(s) config.json calls for, e.g. GGUF {missing[0]}; "
            "are all weight files downloaded?"
        )
    # q and k are permuted with their own head counts (llama.cpp: permute(q, n_head), permute(k, n_head_kv)).
    heads = {T.ATTN_Q: params.n_heads, T.ATTN_K: params.n_kv_heads}
    return [PlannedTensor(name, sources[name], heads.get(kind)) for name, (kind, _) in expected.items()]


def rotary_row_order(rows: int, n_heads: int) -> np.ndarray:
    """Row i of the GGUF q/k weight is row order[i] of the Hugging Face one.

    Hugging Face rotates the two halves of each head (rotate_half); llama.cpp rotates adjacent pairs. The same
    permutation as convert_hf_to_gguf's LlamaModel.permute (reshape(heads, 2, head_dim/2, -1).swapaxes(1, 2)),
    as a row index so it can be applied while converting a block of rows at a time."""
    return np.arange(rows).reshape(n_heads, 2, rows // n_heads // 2).swapaxes(1, 2).reshape(-1)


def _weight_name(kind: gguf.MODEL_TENSOR, bid: int | None = None) -> str:
    name = gguf.TENSOR_NAMES[kind]
    return (name.format(bid=bid) if bid is not None else name) + ".weight"


def _int(config: dict, key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConversionError(f"config.json: {key} is {value!r}; a Llama config needs a positive integer")
    return value


def _rope_linear_factor(scaling: object) -> float | None:
    if not scaling:
        return None
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind == "default":
            return None
        if kind == "linear" and isinstance(scaling.get("factor"), (int, float)):
            return float(scaling["factor"])
    raise ConversionError(f"config.json: rope_scaling {scaling} is not supported (only linear scaling is)")
