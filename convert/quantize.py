"""Quantize a float GGUF with llama.cpp. The only caller of llama_cpp.llama_model_quantize."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from localscore.errors import ConversionError
from localscore.llama.log import LlamaLog

# localscore's quant names -> llama.cpp's file types (what llama-quantize calls Q4_K_M etc.).
FTYPES = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q5_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
}
# Types that output.weight or token_embd.weight can be kept at instead of what llama.cpp picks for the file type
# (benchmarks/quant_fidelity.py measures them; none beat plain q4_k_m clearly enough to become a --quant name).
TENSOR_TYPES = {"q8_0": llama_cpp.GGML_TYPE_Q8_0}


def quantize(source: Path, output: Path, quant: str, *, output_tensor: str | None = None,
             token_embedding: str | None = None) -> None:
    """Quantize the float GGUF `source` into `output` as `quant` (a key of FTYPES) on every core; `output_tensor`
    and `token_embedding` (keys of TENSOR_TYPES) override the types llama.cpp picks for those two tensors."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    if output_tensor is not None:
        params.output_tensor_type = TENSOR_TYPES[output_tensor]
    if token_embedding is not None:
        params.token_embedding_type = TENSOR_TYPES[token_embedding]
    params.nthread = os.cpu_count() or 1
    # The per-tensor progress stays hidden in the log's scope; the cause of a failure is quoted from it.
    with LlamaLog().scope() as log:
        status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(output), ctypes.byref(params))
    if status != 0:
        raise ConversionError(f"llama.cpp could not quantize {source} to {quant} (status {status}){log.said()}")
