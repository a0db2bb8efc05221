"""The kernel choice: CPU classes from llama.cpp's feature line, the decision table, the user's override down to
llama.cpp's load parameters, and the llama-cpp-python version it needs."""

from __future__ import annotations

import json

import llama_cpp
import pytest
from click.testing import CliRunner

from localscore.llama import kernels
from localscore.cli import cli
from localscore.llama.engine import Engine
from localscore.errors import ModelError
from localscore.llama.log import LlamaLog
from localscore.llama.model import read_header
from localscore.llama.kernels import AMX, ARM, AVX2, AVX512_VNNI, OTHER, choose, cpu_class, require_llama_cpp
from localscore.options import RunOptions

ZEN3 = (b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
        b"REPACK = 1 | ")
EPYC_VNNI = ZEN3 + b"AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
SAPPHIRE_RAPIDS = EPYC_VNNI + b"AMX_INT8 = 1 | "
APPLE = b"CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | MATMUL_INT8 = 1 | ACCELERATE = 1 | "


@pytest.mark.parametrize("info, expected", [
    (ZEN3, AVX2), (EPYC_VNNI, AVX512_VNNI), (SAPPHIRE_RAPIDS, AMX), (APPLE, ARM), (b"CPU : SSE3 = 1 | ", OTHER),
    (ZEN3.replace(b"AVX2 = 1", b"AVX2 = 0"), OTHER),
])
def test_cpu_class_from_the_feature_line(info, expected):
    assert cpu_class(info) == expected


def test_cpu_class_of_this_machine_is_known():
    assert cpu_class() in (AMX, AVX512_VNNI, AVX2, ARM, OTHER)


@pytest.mark.parametrize("cpu, file_type, expected", [
    # Measured rows: tiled K-quant kernels beat or tie the repacked ones, q4_0 repacks faster.
    (AVX2, "q4_k_m", "direct"), (AVX512_VNNI, "q4_k_m", "direct"), (AVX2, "q4_k_s", "direct"),
    (AVX512_VNNI, "q4_k_s", "direct"),
    (AVX2, "q4_0", "repacked"), (AVX512_VNNI, "q4_0", "repacked"),
    # Types llama.cpp does not repack on x86: direct, which never holds a second copy.
    (AVX2, "f32", "direct"), (AVX2, "f16", "direct"), (AVX2, "bf16", "direct"), (AVX2, "q8_0", "direct"),
    (AVX2, "q6_k", "direct"), (AVX2, "q5_k_m", "direct"), (AVX2, "q5_k_s", "direct"),
    # AMX crashes when repacked, whatever the type; Arm keeps llama.cpp's default.
    (AMX, "q4_0", "direct"), (AMX, "f16", "direct"), (ARM, "q4_k_m", "repacked"), (OTHER, "q4_0", "direct"),
])
def test_auto_follows_the_table(cpu, file_type, expected):
    choice = choose("auto", file_type, cpu)
    assert (choice.kernels, choice.asked, choice.cpu) == (expected, False, cpu)
    assert choice.use_extra_bufts == (expected == "repacked")
    assert str(choice) == f"{expected} kernels (auto, {cpu})"


def test_every_cpu_class_has_a_row_for_any_type():
    for cpu in (AMX, AVX512_VNNI, AVX2, ARM, OTHER):
        assert choose("auto", "a type from the future", cpu).kernels in ("direct", "repacked")


def test_the_user_overrides_auto():
    assert str(choose("repacked", "q4_k_m", AVX2)) == f"repacked kernels (as asked, {AVX2})"
    assert choose("direct", "q4_0", ARM).use_extra_bufts is False


def test_repacked_on_amx_is_refused():
    with pytest.raises(ModelError, match=r"^repacked kernels crash on AMX CPUs .*use direct or auto$"):
        choose("repacked", "q4_k_m", AMX)


def test_unknown_kernels_are_refused():
    with pytest.raises(ModelError, match=r"^unknown kernels 'fast'; choose one of auto, repacked, direct$"):
        choose("fast", "q4_k_m", AVX2)


@pytest.mark.parametrize("version, ok", [("0.3.36", True), ("0.3.40", True), ("0.4.0", True), ("1.0.0+cpu", True),
                                         ("0.3.35", False), ("0.3.16", False), ("0.2.90", False)])
def test_llama_cpp_version(version, ok):
    if ok:
        require_llama_cpp(version)
    else:
        with pytest.raises(ModelError, match=rf"^llama-cpp-python {version} is older than 0\.3\.36, .*"
                                             r"pip install 'llama-cpp-python>=0\.3\.36'$"):
            require_llama_cpp(version)


def test_an_old_llama_cpp_fails_at_load_in_one_line(gguf_file, monkeypatch):
    monkeypatch.setattr(llama_cpp, "__version__", "0.3.35")
    result = CliRunner().invoke(cli, ["score", "-", "-m", str(gguf_file("q8_0")), "-q"],
                                input=json.dumps({"instruction": "a", "output": "b"}))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: llama-cpp-python 0.3.35 is older than 0.3.36, whose kernels localscore needs: "
        "pip install 'llama-cpp-python>=0.3.36'"]


@pytest.fixture
def load_params(monkeypatch):
    """use_extra_bufts of every weight load (not the header reads) that llama.cpp receives."""
    seen: list[bool] = []
    load = llama_cpp.llama_model_load_from_file

    def spy(path, params):
        if not params.vocab_only:
            seen.append(bool(params.use_extra_bufts))
        return load(path, params)

    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", spy)
    return seen


@pytest.mark.parametrize("asked, extra_bufts", [("repacked", True), ("direct", False)])
def test_the_choice_reaches_llama_cpp(gguf_file, load_params, asked, extra_bufts):
    if asked == "repacked" and cpu_class() == AMX:
        pytest.skip("repacked kernels are refused on AMX")
    with Engine(gguf_file("q4_k_m"), RunOptions(kernels=asked)) as engine:
        assert engine.info.kernels.kernels == asked and engine.info.kernels.asked
    assert load_params == [extra_bufts]


@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_k_m"])
def test_the_header_gives_the_file_type_before_the_weights_load(gguf_file, quant):
    with Engine(gguf_file(quant)) as engine:
        header = read_header(gguf_file(quant), LlamaLog())
        assert header.file_type == engine.file_type == {"f32": "all_f32"}.get(quant, quant)
        assert header.n_ctx_train == engine.n_ctx_train


@pytest.mark.parametrize("cpu, extra_bufts", [(ARM, True), (AVX2, False), (AMX, False)])
def test_auto_loads_what_the_table_says_for_the_file_type(gguf_file, load_params, monkeypatch, cpu, extra_bufts):
    monkeypatch.setattr(kernels, "cpu_class", lambda: cpu)  # the table's row for another CPU, loaded on this one
    with Engine(gguf_file("q4_k_m")) as engine:
        assert engine.info.kernels == choose("auto", "q4_k_m", cpu)
    assert load_params == [extra_bufts]


def test_both_kernels_score_the_same_pairs_closely(gguf_file, pairs):
    """Repacked and direct kernels compute the same products in another order: close, not bit-identical. The
    random tiny model amplifies rounding (0.06 seen on these pairs), so the bound catches wrong weights (scores
    off by units), not summation order."""
    from localscore import Scorer

    if cpu_class() == AMX:
        pytest.skip("repacked kernels are refused on AMX")
    scores = {}
    for asked in kernels.KERNELS[1:]:
        with Scorer.from_path(gguf_file("q4_k_m"), run=RunOptions(kernels=asked)) as scorer:
            scores[asked] = [scorer.score(i, o) for i, o in pairs[:6]]
    assert max(abs(a - b) for a, b in zip(scores["repacked"], scores["direct"])) < 0.15


def test_the_header_line_names_the_kernels(gguf_file):
    record = json.dumps({"instruction": "a", "output": "b"})
    model = str(gguf_file("q8_0"))
    auto = CliRunner().invoke(cli, ["score", "-", "-m", model], input=record, catch_exceptions=False)
    asked = CliRunner().invoke(cli, ["score", "-", "-m", model, "--kernels", "direct"], input=record,
                               catch_exceptions=False)
    header = "localscore: deita-tiny.q8_0.gguf: quality scorer, q8_0, context 2048, "
    assert f"threads, {choose('auto', 'q8_0')}, CPU only\n" in auto.stderr and header in auto.stderr
    assert f"threads, direct kernels (as asked, {cpu_class()}), CPU only\n" in asked.stderr


def test_every_model_command_offers_kernels():
    for command in ("score", "embed", "select", "compare"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert "--kernels [auto|repacked|direct]" in result.output, command
