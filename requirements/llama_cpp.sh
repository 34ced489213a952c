#!/usr/bin/env bash
# llama_cpp.sh <venv-python> [--wheel] — llama.cpp's Python toolchain for the cpu target.
#   --wheel  only build the llama-cpp-python wheel (the long compile) into $LLAMA_CPP_PREBUILT, and keep
#            the sdist there: install.sh runs this beside the pip install of requirements/lock.txt,
#            which it does not touch, then runs the script again without it to install that wheel.
#
# Why a separate script: llama-cpp-python has no wheel on PyPI (pip compiles the sdist, ~6 min on
# 2 cores), and llama.cpp's HF->GGUF converter is not on PyPI at all. PyPI's `gguf` carries the
# same version number as the gguf-py vendored in the sdist but older code that the converter cannot
# use, so converter and gguf-py are both installed from the very sdist llama-cpp-python was built
# from: the GGUF writer, the quantizer and the runtime then come from one llama.cpp commit.
# Idempotent: a matching install is kept.
set -euo pipefail
PY=${1:?usage: llama_cpp.sh <venv-python>}
VERSION=0.3.36
# Runtime CPU dispatch, not one instruction set: GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS build the CPU
# backend once per x86 level (libggml-cpu-<variant>.so beside libllama) and ggml loads the best one
# this CPU supports at run time (slmake.runtimes.llamacpp.load_llama_cpp calls its loader, which
# llama-cpp-python does not: abetlen/llama-cpp-python#2069). As portable as the old AVX2-only build,
# but AVX-512/VNNI/BF16 CPUs get their kernels. Not -march=native: on Sapphire Rapids-class CPUs that
# enables ggml's AMX code, which segfaults at the first q8_0/q4_K matmul (ggml-org/llama.cpp#20824,
# seen here on a 2-core AMX VM), so the AMX variant (sapphirerapids) is not built and such CPUs get
# zen4 (AVX-512 VBMI/VNNI/BF16). VARIANTS trims ggml's list (each one is a full CPU-backend compile):
# the baseline x64 (any x86-64), AVX2 (haswell), AVX-VNNI (alderlake), AVX-512 (skylakex, icelake,
# zen4). LLAVA_BUILD=OFF: slmake never loads the multimodal library. CMAKE_ARGS does not enter pip's
# wheel-cache key, hence --no-cache-dir below.
VARIANTS="x64 haswell alderlake skylakex icelake zen4"
COMMON_OPT="-O1"   # llama.cpp's common library and the multimodal library: see build_wheel and 2b
BUILD="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DLLAVA_BUILD=OFF -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
CONSTRAINTS="$(cd "$(dirname "$0")" && pwd)/constraints.txt"
STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/share/slmake/llama-cpp-scripts.version"
BUILD_STAMP="$(dirname "$STAMP")/llama-cpp-python.build"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
SDIST="$TMP/llama_cpp_python-$VERSION"
PREBUILT=${LLAMA_CPP_PREBUILT:-}
sdist() {  # download (or take the --wheel run's copy of) the sdist and unpack it, once
  [[ -d "$SDIST" ]] && return
  if [[ -n "$PREBUILT" && -f "$PREBUILT/llama_cpp_python-$VERSION.tar.gz" ]]; then
    cp "$PREBUILT/llama_cpp_python-$VERSION.tar.gz" "$TMP/"
  else
    # --no-binary for this one package, not :all: — with :all: pip also builds every build backend
    # its metadata step needs (scikit-build-core, hatchling, setuptools...) from source, one isolated
    # env inside another (pypa/pip#10589): measured ~6 of the install's minutes on 2 cores.
    "$PY" -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$TMP" -c "$CONSTRAINTS"
  fi
  tar -xzf "$TMP/llama_cpp_python-$VERSION.tar.gz" -C "$TMP"
}

# 1. llama-cpp-python (runtime + in-process quantizer), built from the sdist with ggml's x86 variant
#    list cut to VARIANTS (ggml has no option for that; the edit fails loudly if the list changes).
build_wheel() {  # build_wheel DIR: the patched sdist compiled into DIR/llama_cpp_python-*.whl (+ DIR/build.args)
  echo "llama_cpp.sh: building llama-cpp-python==$VERSION from source, CPU variants: $VARIANTS"
  sdist
  "$PY" - "$SDIST/vendor/llama.cpp/ggml/src/CMakeLists.txt" "$VARIANTS" <<'PYEOF'
import re, sys
from pathlib import Path
path, keep = Path(sys.argv[1]), sys.argv[2].split()
x86 = {"x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell", "skylakex", "cannonlake",
       "cascadelake", "icelake", "cooperlake", "zen4", "alderlake", "sapphirerapids"}
seen = set()
def keep_or_drop(m):
    if m.group(2) not in x86:
        return m.group(0)
    seen.add(m.group(2))
    return m.group(0) if m.group(2) in keep else f"{m.group(1)}# slmake: not built: {m.group(0).strip()}"
text = re.sub(r"^(\s*)ggml_add_cpu_backend_variant\((\w+)\b[^)]*\)", keep_or_drop, path.read_text(), flags=re.M)
if set(keep) - seen or "sapphirerapids" not in seen:
    sys.exit(f"llama_cpp.sh: {path}: ggml's x86 variant list is not the expected one "
             f"(missing {sorted(set(keep) - seen)}); update VARIANTS")
path.write_text(text)
PYEOF
  # llama-common (argument parsing, chat templates, JSON schemas, downloads: a third of the wheel's
  # compile) at -O1: llama-cpp-python never calls it, and llama-server/imatrix/quantize run it per request
  # or per run, not per token, except sampling.cpp (a pass over the vocabulary per token: kept at -O3).
  # It is built without -march flags, so the level cannot change a float (no FMA, no reordering).
  grep -q "^set(TARGET llama-common)$" "$SDIST/vendor/llama.cpp/common/CMakeLists.txt" ||
    { echo "llama_cpp.sh: common/CMakeLists.txt no longer defines llama-common; update COMMON_OPT" >&2; exit 1; }
  printf '\n# slmake (requirements/llama_cpp.sh): not hot code, compiled faster\n%s\n%s\n' \
    "target_compile_options(llama-common PRIVATE $COMMON_OPT)" \
    "set_source_files_properties(sampling.cpp PROPERTIES COMPILE_OPTIONS -O3)" \
    >> "$SDIST/vendor/llama.cpp/common/CMakeLists.txt"
  mkdir -p "$1"
  CMAKE_ARGS="$BUILD" "$PY" -m pip wheel -q --no-cache-dir --no-deps "$SDIST" -w "$1" -c "$CONSTRAINTS"
  echo "$VERSION $BUILD $VARIANTS $COMMON_OPT" > "$1/build.args"
}
wheel_ready() {  # a wheel of this version and build in $1
  [[ "$(cat "$1/build.args" 2>/dev/null)" == "$VERSION $BUILD $VARIANTS $COMMON_OPT" ]] &&
    compgen -G "$1/llama_cpp_python-$VERSION-*.whl" >/dev/null
}
installed_ok() {
  [[ "$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null)" == "$VERSION" &&
     "$(cat "$BUILD_STAMP" 2>/dev/null)" == "$VERSION $BUILD $VARIANTS $COMMON_OPT" ]]
}
if [[ "${2:-}" == "--wheel" ]]; then
  [[ -n "$PREBUILT" ]] || { echo "llama_cpp.sh: --wheel needs LLAMA_CPP_PREBUILT=<dir>" >&2; exit 2; }
  if ! installed_ok && ! wheel_ready "$PREBUILT"; then
    build_wheel "$PREBUILT"
    cp "$TMP/llama_cpp_python-$VERSION.tar.gz" "$PREBUILT/"
  fi
  exit 0
fi
if ! installed_ok; then
  WHEELS="$PREBUILT"
  wheel_ready "${WHEELS:-/nonexistent}" || { WHEELS="$TMP/wheel"; build_wheel "$WHEELS"; }
  "$PY" -m pip install -q --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl -c "$CONSTRAINTS"
  "$PY" -m pip install -q "llama-cpp-python==$VERSION" -c "$CONSTRAINTS"   # its dependencies, from the lock
  mkdir -p "$(dirname "$BUILD_STAMP")" && echo "$VERSION $BUILD $VARIANTS $COMMON_OPT" > "$BUILD_STAMP"
fi

# 1b. plain llama-cpp-python use (`python -m llama_cpp.server`, as SERVE.md and benchmarks/serve_load.py
#     run it) must work with this build too: llama_cpp/__init__.py gets a tail that runs slmake's loader
#     (honours SLMAKE_GGML_CPU). Applied to the installed package, re-applied when missing.
INIT="$("$PY" -c 'import importlib.util as u; print(u.find_spec("llama_cpp").origin)')"
if ! grep -q "slmake: load ggml's CPU backend" "$INIT"; then
  cat >> "$INIT" <<'PYEOF'

# --- slmake: load ggml's CPU backend (requirements/llama_cpp.sh). This GGML_BACKEND_DL build links
# none in, and llama-cpp-python never calls ggml's loader (abetlen/llama-cpp-python#2069).
try:
    from slmake.runtimes.llamacpp import load_llama_cpp as _slmake_load_backend
except ImportError:
    pass
else:
    _slmake_load_backend()
PYEOF
fi

# 2. the converter and the matching gguf-py. gguf-py is pip-installed (transformers reads GGUF through
#    it). The converter is copied, with its conversion/ package and its own gguf-py, to
#    <venv>/share/slmake/llama.cpp/ rather than pip-installed: as a package ("llama-cpp-scripts") it
#    would pin transformers==4.57.6 and protobuf<5 in its metadata (so `pip check` fails), and put a
#    top-level module named "conversion" on sys.path. Run in place it imports the gguf-py beside it.
DEST="$(dirname "$STAMP")/llama.cpp"
converter_ok() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "llama-cpp-python==$VERSION" && -f "$DEST/convert_hf_to_gguf.py" &&
     -f "$DEST/models/ggml-vocab-llama-bpe.gguf" ]] &&
    "$PY" -c 'import gguf; assert hasattr(gguf, "LazyChunkedTensor")' 2>/dev/null
}
if ! converter_ok; then
  echo "llama_cpp.sh: installing llama.cpp's convert_hf_to_gguf and gguf-py from the llama-cpp-python==$VERSION sdist"
  sdist
  SRC="llama_cpp_python-$VERSION/vendor/llama.cpp"
  # --force-reinstall: PyPI's gguf has the same version number, so pip would keep it.
  "$PY" -m pip install --no-deps --force-reinstall "$TMP/$SRC/gguf-py" -c "$CONSTRAINTS"
  rm -rf "$DEST" && mkdir -p "$DEST/models" && cp -r "$TMP/$SRC"/{convert_hf_to_gguf.py,conversion,gguf-py,LICENSE} "$DEST/"
  cp "$TMP/$SRC"/models/ggml-vocab-*.gguf "$DEST/models/"   # llama.cpp's tokenizer test vocabularies (tests)
  echo "llama-cpp-python==$VERSION" > "$STAMP"
fi

# 2b. llama.cpp's own tools: llama-imatrix (importance matrix for task-calibrated quantization),
#     llama-quantize (the quantizer that takes it) and llama-server (continuous batching, slots).
#     llama-cpp-python ships none of them. They are compiled from the same sdist, against the
#     libllama / libllama-common / libggml that step 1 installed (a tiny CMake wrapper imports them):
#     only the tools' own sources plus the server's and mtmd's are compiled (~3.9 CPU-min; mtmd, the
#     multimodal library the server links but slmake never drives, at $COMMON_OPT: 136 -> ~45 CPU-s),
#     not a second libllama or ggml. The binaries go to llama_cpp/lib beside the ggml-cpu-<variant>
#     backends (ggml loads backends from the executable's directory), linked into <venv>/bin.
#     No network at build time: LLAMA_USE_PREBUILT_UI=OFF (llama-server without its web UI), no curl.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
LIBDIR="$SITE/llama_cpp/lib"
BINDIR="$("$PY" -c 'import sys, os; print(os.path.join(sys.prefix, "bin"))')"
TOOLS="llama-imatrix llama-quantize llama-server"
TOOLS_STAMP="$(dirname "$STAMP")/llama-cpp-tools.build"
tools_run() {  # each binary loads its libraries and prints its usage (quantize's --help exits 1); in <venv>/bin
  local t out
  for t in $TOOLS; do
    out="$("$LIBDIR/$t" --help 2>&1 || true)"
    [[ "$out" == *[Uu]sage* && -L "$BINDIR/$t" ]] || return 1
  done
}
tools_ok() { [[ "$(cat "$TOOLS_STAMP" 2>/dev/null)" == "$(cat "$BUILD_STAMP") $TOOLS" ]] && tools_run; }
if ! tools_ok; then
  echo "llama_cpp.sh: building $TOOLS from the llama-cpp-python==$VERSION sdist against its installed libraries"
  sdist
  mkdir -p "$TMP/tools-cmake"
  cat > "$TMP/tools-cmake/CMakeLists.txt" <<'CMAKEEOF'
cmake_minimum_required(VERSION 3.21)
project(slmake_llama_tools C CXX)
set(LLAMA_SRC "" CACHE PATH "the sdist's vendor/llama.cpp")
set(SITE "" CACHE PATH "site-packages holding lib/libllama*.so and lib/cmake/{llama,ggml}")
set(MTMD_OPT "-O1" CACHE STRING "optimisation level of the multimodal library (-O3: ~3x its compile time)")
set(PROJECT_SOURCE_DIR "${LLAMA_SRC}")   # the tools' CMake files address the source tree through it
set(BUILD_SHARED_LIBS OFF)               # mtmd, server-context, cpp-httplib: linked into the tools
set(LLAMA_BUILD_COMMON ON)               # vendor/: cpp-httplib for the server
set(LLAMA_BUILD_TOOLS OFF)               # tools/mtmd: the library only, no CLIs
set(LLAMA_BUILD_UI OFF)
set(LLAMA_USE_PREBUILT_UI OFF)           # no download at build time
set(LLAMA_TOOLS_INSTALL OFF)
set(LLAMA_VERSION_MAJOR 0)
set(LLAMA_VERSION_BASE 0.0.0)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
find_package(Threads REQUIRED)
find_package(llama REQUIRED PATHS "${SITE}/lib/cmake/llama" NO_DEFAULT_PATH)   # imports llama, ggml::*
add_library(ggml ALIAS ggml::ggml)
function(llama_add_compile_flags)
endfunction()
function(license_add_file)
endfunction()
add_subdirectory("${LLAMA_SRC}/vendor" vendor)
add_library(llama-common SHARED IMPORTED)   # built and installed by llama-cpp-python's build
set_target_properties(llama-common PROPERTIES
    IMPORTED_LOCATION "${SITE}/lib/libllama-common.so"
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_SRC}/common"
    INTERFACE_COMPILE_DEFINITIONS "LLAMA_SUBPROCESS"   # as that build (the Linux default)
    INTERFACE_LINK_LIBRARIES "llama;vendor::nlohmann;vendor::sheredom;Threads::Threads")
add_subdirectory("${LLAMA_SRC}/tools/mtmd" mtmd)
target_compile_options(mtmd PRIVATE ${MTMD_OPT})   # multimodal input: linked in, never run by slmake
add_subdirectory("${LLAMA_SRC}/tools/ui" ui)
add_subdirectory("${LLAMA_SRC}/tools/server" server)
add_subdirectory("${LLAMA_SRC}/tools/imatrix" imatrix)
add_subdirectory("${LLAMA_SRC}/tools/quantize" quantize)
set_target_properties(llama-imatrix llama-quantize llama-server PROPERTIES
    BUILD_WITH_INSTALL_RPATH TRUE INSTALL_RPATH "$ORIGIN;$ORIGIN/../../lib"
    LINK_OPTIONS "-Wl,--disable-new-dtags")   # DT_RPATH: also finds libllama's own ggml deps
CMAKEEOF
  GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
  cmake -S "$TMP/tools-cmake" -B "$TMP/tools-build" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_SRC="$SDIST/vendor/llama.cpp" -DSITE="$SITE" -DMTMD_OPT="$COMMON_OPT" >"$TMP/tools.log" 2>&1 &&
  cmake --build "$TMP/tools-build" -j "$(nproc)" --target $TOOLS >>"$TMP/tools.log" 2>&1 ||
    { tail -n 40 "$TMP/tools.log"; echo "llama_cpp.sh: building $TOOLS FAILED (log above)" >&2; exit 1; }
  mkdir -p "$BINDIR"
  for t in $TOOLS; do
    install -m 755 "$(find "$TMP/tools-build" -type f -name "$t" | head -n 1)" "$LIBDIR/$t.partial"
    mv -f "$LIBDIR/$t.partial" "$LIBDIR/$t" && ln -sfn "$LIBDIR/$t" "$BINDIR/$t"
  done
  tools_run || { echo "llama_cpp.sh: the built $TOOLS do not run" >&2; exit 1; }
  echo "$(cat "$BUILD_STAMP") $TOOLS" > "$TOOLS_STAMP"
fi

# 3. smoke test: convert a random tiny Llama, quantize it, generate with llama.cpp, read it with
#    transformers (which parses GGUF through the gguf package we just installed).
if ! "$PY" - >"$TMP/smoke.log" 2>&1 <<'EOF'
import ctypes, os, re, subprocess, sys, tempfile
from pathlib import Path
import sentencepiece as spm, torch, llama_cpp
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

with tempfile.TemporaryDirectory() as d:
    d = Path(d); (d / "hf").mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(" ".join(words[i % 12:] + words[: i % 12]) for i in range(200)),
        model_prefix=str(d / "hf" / "tokenizer"), vocab_size=300, model_type="bpe", byte_fallback=True,
        remove_extra_whitespaces=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=2, bos_token_id=2, eos_token_id=3)).save_pretrained(d / "hf")
    gguf_path, q_path = d / "m.gguf", d / "q" / "model.gguf"
    conv = Path(sys.prefix) / "share/slmake/llama.cpp/convert_hf_to_gguf.py"
    r = subprocess.run([sys.executable, str(conv), str(d / "hf"), "--outtype", "f16",
                        "--outfile", str(gguf_path)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    q_path.parent.mkdir()
    p = llama_cpp.llama_model_quantize_default_params(); p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert llama_cpp.llama_model_quantize(str(gguf_path).encode(), str(q_path).encode(), p) == 0
    lib = Path(llama_cpp.__file__).parent / "lib"
    if any(lib.glob("*ggml-cpu-*")):   # what slmake.runtimes.llamacpp.load_llama_cpp does
        libllama = llama_cpp.llama_cpp._lib   # not llama_cpp._ggml: a second copy of libggml
        libllama.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        libllama.ggml_backend_load_all_from_path(str(lib).encode())
        print("CPU backend:", *re.findall(r"ggml-cpu-\S+", Path("/proc/self/maps").read_text())[:1])
    llm = llama_cpp.Llama(str(q_path), n_threads=2, verbose=False)
    llm.create_completion("alpha beta", max_tokens=4)  # a quantized matmul: a broken CPU backend crashes here
    llm.close()
    m = AutoModelForCausalLM.from_pretrained(str(q_path.parent), gguf_file="model.gguf")
    assert m.config.vocab_size == 300, m.config
EOF
then
  tail -n 40 "$TMP/smoke.log"; echo "llama_cpp.sh: smoke test FAILED (log above)" >&2; exit 1
fi
echo "llama_cpp.sh: ok (convert -> quantize -> llama.cpp and transformers both read the GGUF; $(grep -o 'CPU backend: .*' "$TMP/smoke.log" || echo 'CPU backend built in'))"
