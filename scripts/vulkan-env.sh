#!/usr/bin/env bash
# Build the Vulkan environment the GPU tests run in: the system packages (Mesa's software Vulkan device lavapipe,
# the Vulkan loader and headers, the glslc shader compiler, the SPIR-V headers), then a venv of its own
# (.venv-vulkan) with llama-cpp-python built with -DGGML_VULKAN=on and localscore installed editable.
#
# Idempotent: a second run installs nothing and builds nothing. The wheel is built with pip's cache off and kept in
# a folder of ours keyed by version and CMake flags, because pip's wheel cache keys a source build by its sdist
# alone: a Vulkan wheel in it would be reused by a CPU install of the same version, and the CPU wheel already
# there by this one.
#
# Environment: LOCALSCORE_VULKAN_VENV (default .venv-vulkan in the repository), LOCALSCORE_CACHE (default
# ~/.cache/localscore), LLAMA_CPP_PYTHON_VERSION (default: the version the calling python has, so that the
# Vulkan build is the same llama.cpp as the CPU build; else the minimum pyproject.toml asks for),
# CMAKE_BUILD_PARALLEL_LEVEL (default: all cores).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${LOCALSCORE_VULKAN_VENV:-$root/.venv-vulkan}
cache=${LOCALSCORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localscore}
python=${PYTHON:-python3}
packages=(mesa-vulkan-drivers libvulkan1 libvulkan-dev glslc spirv-headers vulkan-tools)

say() { echo "vulkan-env: $*"; }

install_system_packages() {
    local missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    say "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ggml-vulkan.cpp uses VK_EXT_layer_settings (vk::LayerSettingEXT), which Debian 12's headers (1.3.239) lack.
# Newer headers come from Debian 13's libvulkan-dev, fetched through an apt configuration of our own (the
# machine's sources and package state stay untouched) and unpacked into the cache; the system loader links.
vulkan_include_dir() {
    if grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h 2>/dev/null; then
        echo /usr/include
        return
    fi
    local apt=$cache/apt headers=$cache/vulkan-headers
    local options=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
    if ! ls "$headers"/*/usr/include/vulkan/vulkan_core.h >/dev/null 2>&1; then
        say "system Vulkan headers lack VK_EXT_layer_settings: fetching Debian 13's libvulkan-dev" >&2
        mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
            >"$apt/sources.list"
        apt-get "${options[@]}" update -qq >&2
        (cd "$apt/debs" && apt-get "${options[@]}" download libvulkan-dev >&2)
        local deb version
        deb=$(ls -t "$apt/debs"/libvulkan-dev_*.deb | head -n 1)
        version=$(dpkg-deb -f "$deb" Version)
        rm -rf "$headers/$version.partial"
        mkdir -p "$headers/$version.partial"
        dpkg -x "$deb" "$headers/$version.partial"
        mv "$headers/$version.partial" "$headers/$version"
    fi
    dirname "$(ls -d "$headers"/*/usr/include/vulkan | sort -V | tail -n 1)"
}

llama_cpp_python_version() {
    if [ -n "${LLAMA_CPP_PYTHON_VERSION:-}" ]; then
        echo "$LLAMA_CPP_PYTHON_VERSION"
    elif "$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null; then
        :
    else
        sed -n 's/.*"llama-cpp-python>=\([0-9.]*\)".*/\1/p' "$root/pyproject.toml"
    fi
}

install_system_packages
include=$(vulkan_include_dir)
version=$(llama_cpp_python_version)
# No multimodal library (llava/mtmd): localscore does not load it, and it is a fifth of the build.
cmake_args="-DGGML_VULKAN=on -DVulkan_INCLUDE_DIR=$include -DLLAVA_BUILD=off"
python_tag=$("$python" -c 'import sys, platform; v = sys.version_info; print(f"cp{v[0]}{v[1]}-{platform.machine()}")')
key=$(printf '%s\n' "$version" "$cmake_args" "$python_tag" | sha256sum | cut -c1-16)
wheels=$cache/wheels/llama-cpp-python-$version-vulkan-$key

if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    mkdir -p "$cache/sdists" "$cache/logs"
    sdist=$(ls "$cache/sdists"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)
    if [ -z "$sdist" ]; then
        "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$cache/sdists" \
            "llama-cpp-python==$version"
        sdist=$(ls "$cache/sdists"/llama_cpp_python-"$version".tar.gz)
    fi
    log=$cache/logs/llama-cpp-python-$version-vulkan-$key.log
    say "building llama-cpp-python $version with $cmake_args (log: $log)"
    started=$(date +%s)
    rm -rf "$wheels.partial"
    if ! CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$python" -m pip wheel --verbose --no-cache-dir --no-deps -w "$wheels.partial" "$sdist" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        say "the Vulkan build of llama-cpp-python failed: the whole log is $log" >&2
        exit 1
    fi
    mv "$wheels.partial" "$wheels"
    say "built in $(($(date +%s) - started)) s"
fi
wheel=$(ls "$wheels"/*.whl)

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# The venv records which wheel it holds: a llama-cpp-python of the same version from elsewhere is replaced.
if [ "$(cat "$venv/.llama-cpp-python-wheel" 2>/dev/null)" != "$wheel" ]; then
    "$venv/bin/python" -m pip install --quiet --no-cache-dir "$wheel" -e "$root"
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "$wheel"
    echo "$wheel" >"$venv/.llama-cpp-python-wheel"
fi
say "ready: $venv (llama-cpp-python $version, Vulkan)"
