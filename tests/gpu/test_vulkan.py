"""The GPU path for real: localscore on llama.cpp's Vulkan backend, on Mesa's software Vulkan device (lavapipe),
in the build scripts/vulkan-env.sh makes (.venv-vulkan). Each run is `localscore` in a subprocess of that venv;
its scores are compared with the reference method and with the CPU build this process has. Without the build
the tests skip, and under CI a skipped test fails (conftest).

Prompts are short real pairs: lavapipe runs the tiny model at tens of tokens per second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from localscore import Scorer
from localscore.cli import cli
from tests.support.reference import ReferenceScorer, deita_prompt

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LOCALSCORE_VULKAN_VENV", ROOT / ".venv-vulkan"))
# llama.cpp skips CPU-type Vulkan devices unless they are named; lavapipe is the only device here.
LAVAPIPE = {"GGML_VK_VISIBLE_DEVICES": "0"}
N_PAIRS = 6
# Max |delta score| of the tiny F32 model against the reference on these pairs, measured on lavapipe (LLVM 15, 256
# bits): all layers 1.9e-3 with localscore's defaults, 8.6e-4 with the Vulkan backend's fp16 arithmetic off, 1.2e-3
# with 2 of 3 layers (docs/gpu.md, "How far scores move"). The bounds leave about 2x.
F32_BOUND = 4e-3
F32_NO_FP16_BOUND = 2e-3
# q8_0 on the device against q8_0 on the CPU: 0.10 measured (the random test weights amplify rounding).
Q8_0_BOUND = 0.2


@pytest.fixture(scope="module")
def vulkan_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no Vulkan build at {VENV}: run scripts/vulkan-env.sh")
    return python


def localscore(python: Path | str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`localscore ARGS` with `python`, importing this tree; lavapipe visible unless `env` says otherwise."""
    environment = os.environ | LAVAPIPE | {"PYTHONPATH": str(ROOT)} | (env or {})
    environment = {name: value for name, value in environment.items() if value}
    return subprocess.run([str(python), "-m", "localscore", *args], env=environment, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def short_pairs(pairs) -> list[tuple[str, str]]:
    return sorted(pairs, key=lambda p: len(p[0]) + len(p[1]))[10:10 + N_PAIRS]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, short_pairs) -> Path:
    path = tmp_path_factory.mktemp("vulkan") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "output": o}) + "\n" for i, o in short_pairs))
    return path


@pytest.fixture(scope="module")
def reference_scores(tiny_checkpoint, short_pairs) -> np.ndarray:
    reference = ReferenceScorer(tiny_checkpoint)
    return np.array([reference.score(deita_prompt("quality", i, o)) for i, o in short_pairs])


def scores(result: subprocess.CompletedProcess, output: Path) -> np.ndarray:
    assert result.returncode == 0, result.stderr
    return np.array([json.loads(line)["quality_score"] for line in output.read_text().splitlines()])


def header(result: subprocess.CompletedProcess) -> str:
    return next(line for line in result.stderr.splitlines() if " scorer, " in line)


def test_all_layers_on_the_device_match_the_reference(vulkan_python, gguf_file, pairs_file, reference_scores, tmp_path):
    out = tmp_path / "scored.jsonl"
    result = localscore(vulkan_python, "score", str(pairs_file), "-o", str(out), "-m", str(gguf_file("f32")))
    assert header(result).endswith(", 3/3 layers on Vulkan0 (llvmpipe)")
    delta = np.abs(scores(result, out) - reference_scores)
    assert delta.max() <= F32_BOUND, f"worst pair {int(delta.argmax())} off by {delta.max():.2e}"


def test_no_layers_on_the_device_is_the_cpu_build_bit_for_bit(vulkan_python, gguf_file, pairs_file, tmp_path):
    model = str(gguf_file("q8_0"))
    runs = {}
    for name, python in (("vulkan", vulkan_python), ("cpu", sys.executable)):
        out = tmp_path / f"{name}.jsonl"
        result = localscore(python, "score", str(pairs_file), "-o", str(out), "-m", model, "--n-gpu-layers", "0")
        assert header(result).endswith(", CPU only")
        runs[name] = scores(result, out)
    assert runs["vulkan"].tolist() == runs["cpu"].tolist()


def test_the_floor_without_fp16_arithmetic(vulkan_python, gguf_file, pairs_file, reference_scores, tmp_path):
    out = tmp_path / "scored.jsonl"
    result = localscore(vulkan_python, "score", str(pairs_file), "-o", str(out), "-m", str(gguf_file("f32")),
                        env={"GGML_VK_DISABLE_F16": "1"})
    assert np.abs(scores(result, out) - reference_scores).max() <= F32_NO_FP16_BOUND


def test_some_layers_on_the_device(vulkan_python, gguf_file, pairs_file, reference_scores, tmp_path):
    out = tmp_path / "scored.jsonl"
    result = localscore(vulkan_python, "score", str(pairs_file), "-o", str(out), "-m", str(gguf_file("f32")),
                        "--n-gpu-layers", "2")
    assert header(result).endswith(", 2/3 layers on Vulkan0 (llvmpipe)")
    assert np.abs(scores(result, out) - reference_scores).max() <= F32_BOUND


@pytest.fixture(scope="module")
def bench_gguf(tmp_path_factory) -> Path:
    """The benchmark shape (8 layers of width 1024, benchmarks/README.md) as q8_0: llama.cpp's large-matrix paths,
    which the tiny model's width never reaches."""
    from localscore.convert import convert
    from tests.support.checkpoints import BENCH, write_checkpoint

    folder = tmp_path_factory.mktemp("bench")
    return convert(write_checkpoint(folder / "deita-bench", BENCH), folder / "deita-bench.q8_0.gguf", "q8_0")


def test_the_benchmark_model_on_the_device(vulkan_python, bench_gguf, short_pairs, tmp_path):
    # One short pair: lavapipe runs this model at ~12 tokens/s on 2 cores.
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps(dict(zip(("instruction", "output"), min(short_pairs, key=lambda p: len(p[0] + p[1])))))
                      + "\n")
    with Scorer.from_path(bench_gguf) as on_cpu:
        cpu = np.array(on_cpu.score_many([tuple(json.loads(source.read_text()).values())]))
    for layers, where in (("999", "9/9 layers on Vulkan0 (llvmpipe)"), ("4", "4/9 layers on Vulkan0 (llvmpipe)"),
                          ("0", "CPU only")):
        out = tmp_path / f"{layers}.jsonl"
        result = localscore(vulkan_python, "score", str(source), "-o", str(out), "-m", str(bench_gguf),
                            "--n-gpu-layers", layers)
        assert header(result).endswith(f", {where}"), header(result)
        if layers == "0":
            assert scores(result, out).tolist() == cpu.tolist()
        else:
            assert np.abs(scores(result, out) - cpu).max() <= Q8_0_BOUND


def test_pack_1_is_the_same_across_runs_and_record_orders(vulkan_python, gguf_file, pairs_file, tmp_path):
    model = str(gguf_file("q8_0"))
    lines = pairs_file.read_text().splitlines(keepends=True)
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_text("".join(reversed(lines)))
    runs = []
    for source in (pairs_file, reversed_file):
        out = tmp_path / f"{source.stem}.scored.jsonl"
        runs.append(scores(localscore(vulkan_python, "score", str(source), "-o", str(out), "-m", model), out))
    assert runs[0].tolist() == runs[1][::-1].tolist()
    # Quantized weights on the device rank as on the CPU, within the bound.
    with Scorer.from_path(model) as on_cpu:
        cpu = np.array(on_cpu.score_many(json.loads(line).values() for line in lines))
    assert np.abs(runs[0] - cpu).max() <= Q8_0_BOUND


def test_embeddings_match_the_cpu_embedder(vulkan_python, embedder_gguf, tmp_path):
    from localscore.llama.embedder import Embedder
    from tests.support.data import sharegpt_conversations, sharegpt_turns

    conversations = sharegpt_conversations()[:2]
    source = tmp_path / "conversations.json"
    source.write_text(json.dumps(conversations))
    out = tmp_path / "vectors.npy"
    # A cache of its own: the embedding cache is keyed by model and tokens, not by backend.
    result = localscore(vulkan_python, "embed", str(source), "-o", str(out), "-m", str(embedder_gguf),
                        env={"LOCALSCORE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    on_device = np.load(out)
    with Embedder.from_path(embedder_gguf) as embedder:
        on_cpu = embedder.embed([sharegpt_turns(record) for record in conversations])
    cosine = (on_device * on_cpu).sum(axis=1) / np.linalg.norm(on_device, axis=1) / np.linalg.norm(on_cpu, axis=1)
    assert cosine.min() >= 0.9999


def test_a_vulkan_build_without_a_device_says_so(vulkan_python, gguf_file, pairs_file):
    # Without GGML_VK_VISIBLE_DEVICES llama.cpp skips lavapipe (a CPU-type device): no Vulkan device is left.
    result = localscore(vulkan_python, "score", str(pairs_file), "-m", str(gguf_file("q8_0")), "--n-gpu-layers", "99",
                        env={"GGML_VK_VISIBLE_DEVICES": ""})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: this llama.cpp build has the Vulkan backend but it found no device: check the GPU's driver (for "
        "Vulkan, `vulkaninfo` lists the devices it sees), or drop --n-gpu-layers to run on the CPU")


def test_n_gpu_layers_on_a_cpu_build_says_so(gguf_file):
    result = CliRunner().invoke(cli, ["score", "-", "-m", str(gguf_file("q8_0")), "--n-gpu-layers", "1"],
                                input='{"instruction": "a", "output": "b"}\n')
    assert result.exit_code == 1
    assert result.stderr == ("Error: this llama-cpp-python is built for the CPU only, so --n-gpu-layers has nothing to "
                             "offload to: reinstall it with a GPU backend (docs/gpu.md) or drop --n-gpu-layers\n")


def test_what_does_not_fit_the_device_is_one_line(vulkan_python, gguf_file, pairs_file, tmp_path):
    # lavapipe's device memory is this process's memory, so an address-space limit (RLIMIT_AS) on the child makes a
    # small device. Down from the run's own peak, in 12 MiB steps: first the host side runs short (Python's
    # allocations, or llvmpipe's compiler, which aborts: not the device path, so not checked), then the context
    # does not fit the device, then the weights do not, then the file cannot even be mapped. From the first "does
    # not fit" on, every failure that reaches Python must be one line of ours. Under an address-space limit the host
    # side can run short at any step, not only the first ones: a thread of llvmpipe or of ggml's Vulkan backend
    # whose allocation fails kills the process by a signal (an uncaught std::bad_alloc, a segfault in Mesa; seen in
    # a few of the steps of one run in four), before or after our check. A device that reports its memory full does
    # not do that, so those steps are skipped, not failed.
    import resource

    model = gguf_file("f32")
    args = [str(vulkan_python), "-c", "import runpy, sys; sys.argv[0] = 'localscore'\n"
            "try:\n    runpy.run_module('localscore', run_name='__main__')\n"
            "finally:\n    print('VmPeak', open('/proc/self/status').read().split('VmPeak:')[1].split()[0], "
            "file=sys.stderr)",
            "score", str(pairs_file.parent / "one.jsonl"), "-m", str(model), "-t", "1", "-q",
            "-o", str(tmp_path / "out.jsonl")]
    (pairs_file.parent / "one.jsonl").write_text(pairs_file.read_text().splitlines()[0] + "\n")
    environment = os.environ | LAVAPIPE | {"PYTHONPATH": str(ROOT)}

    def run(limit: int | None) -> subprocess.CompletedProcess:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return subprocess.run(args, env=environment, capture_output=True, text=True, timeout=120,
                              preexec_fn=cap if limit else None)

    free = run(None)
    assert free.returncode == 0, free.stderr
    peak = int(free.stderr.split("VmPeak")[-1].split()[0]) * 1024
    context = f"Error: a context of 256 tokens for {model} does not fit in the memory of Vulkan0 (llvmpipe) ("
    weights = f"Error: {model} does not fit in the memory of Vulkan0 (llvmpipe) ("
    seen = []
    for limit in range(peak, peak // 2, -12 * 2**20):
        result = run(limit)
        last = ([line for line in result.stderr.splitlines() if not line.startswith("VmPeak")] or [""])[-1]
        if not seen and not last.startswith((context, weights)):
            continue
        if result.returncode == 0 or (result.returncode < 0 and "Traceback" not in result.stderr):
            continue
        assert "Traceback" not in result.stderr and result.returncode == 1, (limit, result.returncode, result.stderr)
        seen.append(last)
        if not last.startswith((context, weights)):
            break
    assert any(line.startswith(weights) and "offload fewer layers with --n-gpu-layers, or use a smaller "
               "quantization" in line for line in seen), seen
    assert seen[-1].startswith(f"Error: cannot load {model}: this process may not use the memory it needs "
                               "(llama.cpp: mmap failed: Cannot allocate memory)"), seen
