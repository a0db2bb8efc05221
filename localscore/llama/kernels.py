"""Which llama.cpp matrix kernels a model runs with, chosen per CPU class and weight type from measurements.

llama.cpp can copy some weight matrices at load into an interleaved layout ("repacked" kernels: its CPU_REPACK
extra buffer, and the AMX buffer on AMX CPUs), or leave them as the file stores them ("direct" kernels: the
tiled K-quant kernels of llama-cpp-python 0.3.36 and the plain dot products). The switch is llama.cpp's
`use_extra_bufts`. Repacking costs a second copy of those matrices in memory while the file is memory-mapped,
so where both run at the same speed the table picks direct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ModelError
from ..options import KERNELS

# 0.3.36 has the tiled K-quant kernels the table below was measured with (ggml-org/llama.cpp PR #27851); 0.3.35
# replaced `use_mmap` by `load_mode`. An older build would run the slower kernels without saying so.
MIN_LLAMA_CPP = (0, 3, 36)

AMX, AVX512_VNNI, AVX2, ARM, OTHER = "x86 AMX", "x86 AVX-512 VNNI", "x86 AVX2", "Arm NEON", "other CPU"

# The decision table: (CPU class, file types or None for every other type, kernels). The first matching row
# wins. "Measured" rows cite the run behind them (benchmarks/README.md, "Kernels"); "inferred" rows cite
# llama.cpp's ggml-cpu/repack.cpp, whose ggml_repack_get_optimal_repack_type() says which tensor types it
# repacks on which ISA: on x86 with AVX2 only Q4_0, Q4_K, IQ4_NL and MXFP4 (plus Q2_K with AVX-512); Q5_K, Q6_K,
# Q8_0 and the float types only on Arm. File types without such tensors run the same kernels either way.
_TABLE: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    # Measured: the AMX buffer segfaults on quantized models (ggml-org/llama.cpp#20824; rc 139 on a Sapphire
    # Rapids VM, every type); use_extra_bufts is the only switch that removes it, and CPU_REPACK alone was 22 %
    # slower than direct at q4_k_m there.
    (AMX, None, "direct"),
    # Measured (2-core EPYC with AVX-512 VNNI, 7B-width bare loop): q4_0 repacked 189 tokens/s vs 131 direct;
    # with llama.cpp built for AVX2 only on the same VM, 125 vs 100 (issue 13); on a Zen 3 (AVX2), 170M model,
    # 52.4 vs 33.4 (kernel_table.py). iq4_nl is inferred: the same 8x8 repack path as q4_0, no tiled kernel.
    (AVX512_VNNI, frozenset({"q4_0", "iq4_nl"}), "repacked"),
    (AVX2, frozenset({"q4_0", "iq4_nl"}), "repacked"),
    # Measured (EPYC AVX-512 VNNI, 7B-width): q4_k_m direct (tiled VNNI kernels) 304-309 tokens/s at 872 MB vs
    # repacked 190-198 at 1,216 MB; at full 7B 31.6 vs 20.8 tokens/s, 5.02 vs 7.94 GB. q4_k_s is inferred from
    # q4_k_m: the same Q4_K matrices but for a few attn_v and ffn_down at Q5_K. Other types: same kernels either
    # way (repack.cpp), so direct for the memory.
    (AVX512_VNNI, None, "direct"),
    # Measured (2-core EPYC Zen 3, AVX2 without VNNI, bare loop, 1 thread, host load ~12; benchmarks/README.md
    # "Kernels"): q4_k_m at 7B-width direct 8.9 vs repacked 8.4 tokens/s at 865 vs 1,206 MB peak RSS; on the
    # 170M model 53 vs 54 tokens/s at 237 vs 282 MB. A tie, so the setting without the second copy of the Q4_K
    # matrices; q4_k_s, the same Q4_K matrices, is inferred from it. Other types run the same kernels either way
    # (repack.cpp: only Q4_0/Q4_K/IQ4_NL/MXFP4 repack under AVX2).
    (AVX2, None, "direct"),
    # Inferred, not measured: on Arm repack.cpp has interleaved NEON dot-product / i8mm kernels for Q4_0, Q4_K,
    # Q5_K, Q6_K and Q8_0, and the tiled kernels have no Arm micro-kernel in 0.3.36, so llama.cpp's default
    # (repacked) stays.
    (ARM, None, "repacked"),
    # Inferred: without AVX2 or NEON repack.cpp repacks nothing; direct never holds a second copy.
    (OTHER, None, "direct"),
)


@dataclass(frozen=True)
class KernelChoice:
    kernels: str  # "repacked" or "direct"
    cpu: str  # the CPU class it was chosen for
    asked: bool  # the user named the kernels (else the table chose them)

    @property
    def use_extra_bufts(self) -> bool:
        return self.kernels == "repacked"

    def __str__(self) -> str:
        return f"{self.kernels} kernels ({'as asked' if self.asked else 'auto'}, {self.cpu})"


def cpu_class(system_info: bytes | None = None) -> str:
    """The CPU class of the llama.cpp build that runs here, from the features it reports (the loaded backend's,
    which may be fewer than the CPU's)."""
    if system_info is None:
        import llama_cpp  # here, so that the CLI can offer KERNELS without loading llama.cpp

        system_info = llama_cpp.llama_print_system_info() or b""
    features = {name.decode() for name in re.findall(rb"(\w+) = 1", system_info)}
    if "AMX_INT8" in features:
        return AMX
    if "AVX512_VNNI" in features:
        return AVX512_VNNI
    if "AVX2" in features:
        return AVX2
    if "NEON" in features:
        return ARM
    return OTHER


def choose(kernels: str, file_type: str, cpu: str | None = None) -> KernelChoice:
    """The kernels for a model of `file_type` (e.g. "q4_k_m") on `cpu` (default: this machine): `kernels` as
    given, or the decision table's row for "auto". AMX is never repacked: it crashes."""
    if kernels not in KERNELS:
        raise ModelError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    cpu = cpu or cpu_class()
    if kernels != "auto":
        if cpu == AMX and kernels == "repacked":
            raise ModelError("repacked kernels crash on AMX CPUs (ggml-org/llama.cpp#20824); use direct or auto")
        return KernelChoice(kernels, cpu, asked=True)
    for row_cpu, file_types, row_kernels in _TABLE:
        if row_cpu == cpu and (file_types is None or file_type in file_types):
            return KernelChoice(row_kernels, cpu, asked=False)
    raise AssertionError(f"the kernel table has no row for {cpu}")  # every class ends in a None row


def require_llama_cpp(version: str | None = None) -> None:
    """Refuse a llama-cpp-python older than the kernels the table was measured with."""
    if version is None:
        import llama_cpp

        version = llama_cpp.__version__
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    if found < MIN_LLAMA_CPP:
        wanted = ".".join(map(str, MIN_LLAMA_CPP))
        raise ModelError(f"llama-cpp-python {version} is older than {wanted}, whose kernels localscore needs: "
                         f"pip install 'llama-cpp-python>={wanted}'")
