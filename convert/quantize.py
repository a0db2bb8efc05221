"""Quantize a float GGUF with llama.cpp. The only caller of llama_cpp.llama_model_quantize."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from localscore.llama_log import LlamaLog
from localscore.errors import ConversionError

# localscore's quant names -> llama.cpp's file types (what llama-quantize calls Q4_K_M etc.).
FTYPES = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}


def quantize(source: Path, output: Path, quant: str) -> None:
    """Quantize the float GGUF `source` into `output` as `quant` (a key of FTYPES) on every core."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = os.cpu_count() or 1
    # The per-tensor progress stays hidden in the log's scope; the cause of a failure is quoted from it.
    with LlamaLog().scope() as log:
        status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(output), ctypes.byref(params))
    if status != 0:
        raise ConversionError(f"llama.cpp could not quantize {source} to {quant} (status {status}){log.said()}")
