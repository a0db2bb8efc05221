#!/usr/bin/env bash
# cuda_bench.py on a machine with an NVIDIA GPU, CUDA, CMake, ninja and PyTorch (with transformers) but no
# network. Three steps:
#
#   benchmarks/cuda_bench.sh carry          here, with network: the llama-cpp-python sdist and the few wheels
#                                           the GPU machine lacks, into benchmarks/work/cuda-carry/
#   benchmarks/cuda_bench.sh build          there: a venv over the system's torch, llama-cpp-python built with
#                                           CUDA for this GPU's architecture only (minutes on 16 cores)
#   benchmarks/cuda_bench.sh run [ARGS...]  there: cuda_bench.py benchmarks/work/cuda ARGS (tokens/s, scores)
#
# CARRY_PYTHONS (default "3.10 3.11 3.12 3.13"): the Python versions whose binary wheels `carry` fetches, as
# the GPU machine's Python is not known here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
carry=$root/benchmarks/work/cuda-carry
venv=$root/benchmarks/work/cuda-venv
version=$(sed -n 's/.*"llama-cpp-python>=\([0-9.]*\)".*/\1/p' "$root/pyproject.toml")
# What cuda_bench.py imports beyond torch, transformers and numpy: llama-cpp-python's own imports, the GGUF
# converter's, and the builder of the wheel.
pure=(diskcache jinja2 gguf scikit-build-core pathspec packaging typing-extensions)
binary=(markupsafe sentencepiece scipy)

case "${1:-}" in
carry)
    mkdir -p "$carry"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$carry" "llama-cpp-python==$version"
    python3 -m pip download --quiet --no-deps -d "$carry" "${pure[@]}"
    for python in ${CARRY_PYTHONS:-3.10 3.11 3.12 3.13}; do
        python3 -m pip download --quiet --no-deps --only-binary :all: --python-version "$python" \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            -d "$carry" "${binary[@]}"
    done
    ls "$carry"
    ;;
build)
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)
    [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --no-index --find-links "$carry" diskcache jinja2 gguf sentencepiece \
        scikit-build-core scipy
    started=$(date +%s)
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch -DLLAVA_BUILD=off" CMAKE_GENERATOR=Ninja \
        CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/python" -m pip install --no-index --no-deps \
        --no-build-isolation --no-cache-dir --force-reinstall "$carry/llama_cpp_python-$version.tar.gz"
    echo "cuda_bench: llama-cpp-python $version built for sm_$arch in $(($(date +%s) - started)) s"
    ;;
run)
    shift
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    PYTHONPATH=$root "$venv/bin/python" "$root/benchmarks/cuda_bench.py" "$root/benchmarks/work/cuda" "$@"
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
