"""What a base model is, read without loading it: shapes, positions, module names, a fingerprint.

The check stage and `slmake check` use this to catch a bad model spec before DVC removes anything
(heads that do not divide the hidden size, LoRA targets the model does not have, pickle-only
weights), and to give `base` a dependency on the bytes behind `model.hf.path`: DVC cannot list a
path that only exists for one model source, so the check stage writes the folder's content hashes
to a small file that `base` depends on. Reading config.json, safetensors headers or GGUF metadata
takes milliseconds; hashes and GGUF facts are cached by (size, mtime, inode), as DVC does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import gguf_meta
from .io import relative_paths_note, sha256_file, write_json_atomic

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Weight-bearing (2-D) modules of a Llama-style decoder, as transformers names them.
LLAMA_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# GGUF tensor names of the architectures whose transformers modules use the Llama names.
GGUF_LLAMA_ARCHS = ("llama", "mistral", "qwen2", "qwen3")
_GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}


class ModelFileError(Exception):
    """The files behind model.hf.path cannot be used; the message names the path and the reason."""


@dataclass
class ModelFacts:
    where: str                         # what the facts were read from, for messages
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None        # set when the model declares it (then hidden % heads may be != 0)
    max_positions: int | None = None
    modules: list[str] | None = None  # weight-bearing module names (LoRA targets); None = unknown


def scratch_facts(s: dict) -> ModelFacts:
    """The Llama that base_model.build_scratch makes from model.scratch."""
    modules = ["model.embed_tokens", "lm_head"] + [
        f"model.layers.{i}.{m}" for i in range(s["num_layers"]) for m in LLAMA_LAYER]
    return ModelFacts("model.scratch", s["hidden_size"], s["num_heads"], s["num_kv_heads"], None,
                      s["max_position_embeddings"], modules)


def shape_problems(m: ModelFacts, prefix: str | None = None) -> list[str]:
    """Attention shapes that cannot build: heads must divide the hidden size (unless the model
    declares its head_dim), KV heads must divide heads, RoPE needs an even head size."""
    name = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: f"{m.where}: {k}")
    keys = ("hidden_size", "num_heads", "num_kv_heads") if prefix else \
        ("hidden_size", "num_attention_heads", "num_key_value_heads")
    out = []
    if m.hidden and m.heads:
        if m.head_dim is None and m.hidden % m.heads:
            out.append(f"{name(keys[1])}: {m.heads} does not divide {keys[0]}={m.hidden} "
                       f"(each attention head gets hidden_size / num_heads dimensions)")
        elif (m.head_dim or m.hidden // m.heads) % 2:
            out.append(f"{name(keys[1])}: {m.heads} heads give head size {m.head_dim or m.hidden // m.heads}, "
                       "which is odd; rotary position embeddings need an even head size")
    if m.heads and m.kv_heads and m.heads % m.kv_heads:
        out.append(f"{name(keys[2])}: {m.kv_heads} does not divide {keys[1]}={m.heads} "
                   "(grouped-query attention shares each KV head among a whole number of heads)")
    return out


def pickle_only(folder: Path) -> list[str]:
    """Names of pickle weight files when the folder has no safetensors (else [])."""
    files = [p for p in folder.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return []
    return sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)


def check_folder(path: str, gguf_file: str | None) -> Path:
    """The model folder (or GGUF) behind model.hf.path, or ModelFileError saying what is missing."""
    folder = Path(path)
    if not folder.exists():
        raise ModelFileError(f"model.hf.path: {path} does not exist (expected a local model folder; "
                             f"{relative_paths_note()})")
    if not folder.is_dir():
        raise ModelFileError(f"model.hf.path: {path} is a file; expected the folder that holds it "
                             "(set model.hf.gguf_file to the GGUF's name inside the folder)")
    if gguf_file:
        gguf = folder / gguf_file
        if not gguf.is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise ModelFileError(f"model.hf.gguf_file: {gguf} not found (GGUF files in {path}: {found})")
        return gguf
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"model.hf.path: {path} has no config.json (expected a Hugging Face model folder: "
                             "config.json + *.safetensors + tokenizer files, or set model.hf.gguf_file)")
    pickles = pickle_only(folder)
    if pickles:
        raise ModelFileError(
            f"model.hf.path: {path} has only pickle weights {pickles}: refused, because unpickling can run "
            "arbitrary code. Use a model published as *.safetensors, or convert it once where you trust the "
            "file (load it, then save_pretrained(..., safe_serialization=True))")
    if not any(folder.glob("*.safetensors")):
        raise ModelFileError(f"model.hf.path: {path} has no *.safetensors weights")
    return folder


def _config_facts(folder: Path) -> ModelFacts:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{folder / 'config.json'}: not readable JSON ({e})") from None
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg

    def first(*keys):
        return next((text[k] for k in keys if isinstance(text.get(k), int)), None)

    heads = first("num_attention_heads", "n_head", "num_heads")
    return ModelFacts(str(folder / "config.json"), first("hidden_size", "n_embd", "d_model"), heads,
                      first("num_key_value_heads") or heads, first("head_dim"),
                      first("max_position_embeddings", "n_positions", "max_sequence_length"),
                      _safetensors_modules(folder, bool(text.get("tie_word_embeddings"))))


def _safetensors_modules(folder: Path, tied: bool) -> list[str] | None:
    from safetensors import safe_open

    names: set[str] = set()
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="numpy") as st:
                for key in st.keys():
                    if key.endswith(".weight") and len(st.get_slice(key).get_shape()) == 2:
                        names.add(key[: -len(".weight")])
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad headers
            raise ModelFileError(f"{f}: not a readable safetensors file ({e})") from None
    if tied and any(n.endswith("embed_tokens") for n in names):
        names.add("lm_head")
    return sorted(names) or None


def _gguf_facts(path: Path) -> ModelFacts:
    try:
        import gguf  # noqa: F401 - gguf_meta hands unusual files to it
    except ImportError:
        return ModelFacts(str(path))
    try:
        reader = gguf_meta.read(path)
    except Exception as e:  # noqa: BLE001 - gguf raises ValueError/struct errors on damaged files
        raise ModelFileError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    fields = reader.fields

    def get(key):
        return fields.get(key)

    arch = get("general.architecture")
    modules = None
    if arch in GGUF_LLAMA_ARCHS:
        names = {t.name.removesuffix(".weight") for t in reader.tensors if len(t.shape) == 2}
        modules = {"model.embed_tokens", "lm_head"}  # GGUF drops `output` when it is tied
        for n in names:
            parts = n.split(".")
            if len(parts) == 3 and parts[0] == "blk" and parts[2] in _GGUF_TO_HF:
                modules.add(f"model.layers.{parts[1]}.{_GGUF_TO_HF[parts[2]]}")
        modules = sorted(modules)
    heads = get(f"{arch}.attention.head_count")
    return ModelFacts(str(path), get(f"{arch}.embedding_length"), heads,
                      get(f"{arch}.attention.head_count_kv") or heads, get(f"{arch}.attention.key_length"),
                      get(f"{arch}.context_length"), modules)


class HashCache:
    """sha256 (and other per-file facts) keyed by path + (size, mtime, inode): a model's bytes are
    hashed once, not on every `dvc repro`."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self.data = {}
        self.dirty = False

    def get(self, f: Path, kind: str, compute):
        st = f.stat()
        key, stamp = str(f.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.data.get(key)
        if not entry or entry.get("stamp") != stamp:
            entry = self.data[key] = {"stamp": stamp}
        if kind not in entry:
            entry[kind] = compute(f)
            self.dirty = True
        return entry[kind]

    def save(self) -> None:
        if self.dirty and self.path is not None:
            write_json_atomic(self.path, self.data, indent=None)


def hf_facts(h: dict, cache: HashCache | None = None) -> ModelFacts:
    """Facts of the local model behind model.hf (raises ModelFileError)."""
    target = check_folder(h["path"], h.get("gguf_file"))
    if target.is_file():
        cache = cache or HashCache(None)
        return ModelFacts(**cache.get(target, "facts", lambda f: asdict(_gguf_facts(f))))
    return _config_facts(target)


def is_local(model: dict) -> bool:
    return model["source"] == "hf" and (Path(model["hf"]["path"]).exists() or not model["allow_network"])


def facts(model: dict, cache: HashCache | None = None) -> ModelFacts | None:
    """Facts of the spec's base model; None for a hub id (nothing local to read)."""
    if model["source"] == "scratch":
        return scratch_facts(model["scratch"])
    if not is_local(model):
        return None
    return hf_facts(model["hf"], cache)


def fingerprint(model: dict, cache: HashCache | None = None) -> dict:
    """What `base` reads besides its params: the content hashes of every file in the model folder
    (hidden files aside). Scratch models read nothing else; hub ids are pinned by their revision."""
    if model["source"] == "scratch":
        return {"source": "scratch"}
    h = model["hf"]
    if not is_local(model):
        return {"source": "hf", "hub_id": h["path"], "revision": h.get("revision")}
    folder = check_folder(h["path"], h.get("gguf_file"))
    folder = folder.parent if folder.is_file() else folder
    cache = cache or HashCache(None)
    files = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                f = Path(root) / name
                files[f.relative_to(folder).as_posix()] = cache.get(f, "sha256", sha256_file)
    return {"source": "hf", "files": files}
