"""The base model: pretrained here from scratch (default, offline) or imported from HF / GGUF.

Scratch: a SentencePiece tokenizer trained on the train split, a LlamaConfig from the spec and
a short causal-LM pretraining run on the train split's prompts and responses *as separate
documents* -- the base model learns the language of tickets and of the answers, but never sees a
ticket paired with its answer, so fine-tuning has something real to teach.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from tqdm import tqdm

from . import gguf_tokenizer
from .gguf_meta import gguf_py_reads_once
from .io import read_jsonl
from .model_files import ModelFileError, check_folder, scratch_facts, shape_problems

SPECIAL = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}


class BaseModelError(Exception):
    pass


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path, **options) -> Path:
    """SentencePiece BPE, llama-style ids. remove_extra_whitespaces=False keeps llama.cpp's
    tokenisation identical to sentencepiece's (measured: ~20 % agreement otherwise). `options`
    override trainer settings (tests make Gemma-style tokenizers: no dummy prefix, other ids)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    try:
        _train_spm(spm, texts, model, vocab_size, **options)
    except RuntimeError as e:
        raise BaseModelError(f"model.scratch.vocab_size={vocab_size}: SentencePiece could not train on the "
                             f"train split: {str(e).split('] ')[-1]}") from None
    path = out_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def _train_spm(spm, texts: list[str], model, vocab_size: int, **options) -> None:
    settings = dict(
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        pad_id=SPECIAL["pad"], unk_id=SPECIAL["unk"], bos_id=SPECIAL["bos"], eos_id=SPECIAL["eos"],
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        num_threads=1,
        normalization_rule_name="identity",  # keep newlines: HF and llama.cpp do not normalise either
        minloglevel=2,
    )
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, **{**settings, **options})


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_scratch(cfg: dict, train_split: Path, out_dir: Path, seed: int) -> dict:
    s = cfg["scratch"]
    bad = shape_problems(scratch_facts(s), "model.scratch")
    if bad:  # before minutes of tokenizer training and pretraining, not in the middle of them
        raise BaseModelError("; ".join(bad))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = read_jsonl(train_split)
    if not rows:
        raise BaseModelError(f"{train_split}: the train split is empty; nothing to pretrain on")
    docs = [r["prompt"] for r in rows] + [r["response"] for r in rows]
    train_tokenizer(docs, s["vocab_size"], out_dir)
    # transformers 5: LlamaTokenizer(vocab_file=...) silently builds an empty vocab; loading the
    # folder with a tokenizer_config converts tokenizer.model properly (needs protobuf).
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "legacy": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
    }))
    tok = load_tokenizer(out_dir)
    if len(tok) != s["vocab_size"]:
        raise BaseModelError(f"tokenizer has {len(tok)} tokens, expected model.scratch.vocab_size={s['vocab_size']}")
    tok.save_pretrained(str(out_dir))

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_layers"], num_attention_heads=s["num_heads"],
        num_key_value_heads=s["num_kv_heads"], max_position_embeddings=s["max_position_embeddings"],
        bos_token_id=SPECIAL["bos"], eos_token_id=SPECIAL["eos"], pad_token_id=SPECIAL["pad"],
        tie_word_embeddings=False, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    stats = pretrain(model, tok, docs, s["pretrain"], seed)
    model.config.use_cache = True
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return {"params": sum(p.numel() for p in model.parameters()), **stats}


def pretrain(model, tok, docs: list[str], p: dict, seed: int) -> dict:
    """Plain causal-LM loop over packed blocks of shuffled documents (deterministic, 1 process)."""
    import torch

    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    ids: list[int] = []
    for i in order:
        ids += tok(docs[i])["input_ids"] + [tok.eos_token_id]
    block = p["block_size"]
    n_blocks = len(ids) // block
    if n_blocks == 0 or p["steps"] == 0:
        return {"pretrain_steps": 0, "pretrain_tokens": len(ids), "pretrain_loss": None}
    data = torch.tensor(ids[: n_blocks * block]).view(n_blocks, block)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.01)
    # warm-up over >= 2 steps: torch's OneCycleLR divides by zero when pct_start x steps is exactly 1
    # (steps=10 with 0.1), and a shorter warm-up is no warm-up; under 4 steps, a constant lr
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=p["steps"],
                                                 pct_start=min(0.5, max(0.1, 2 / p["steps"])))
             if p["steps"] >= 4 else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    model.train()
    loss_val = float("nan")
    bar = tqdm(range(p["steps"]), desc="pretrain", unit="step", mininterval=2)
    for _ in bar:
        batch = data[torch.randint(0, n_blocks, (p["batch_size"],), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = loss.item()
        bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
    model.eval()
    return {"pretrain_steps": p["steps"], "pretrain_tokens": len(ids), "pretrain_loss": round(loss_val, 4)}


def import_hf(cfg: dict, out_dir: Path) -> dict:
    """Copy a Hugging Face model (local folder, hub id when allowed, or a GGUF) as safetensors."""
    h = cfg["hf"]
    src = h["path"]
    local = Path(src).exists()
    if not local and not cfg["allow_network"]:
        raise BaseModelError(
            f"model.hf.path: {src!r} is not a local folder and model.allow_network is false; "
            "point it at a folder with config.json + weights, or set model.allow_network=true")
    if local:  # a missing config, pickle-only weights (refused: unpickling runs code), a missing GGUF
        try:
            check_folder(src, h.get("gguf_file"))
        except ModelFileError as e:
            raise BaseModelError(str(e)) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)   # a SentencePiece GGUF writes tokenizer.model there first
    kw = dict(trust_remote_code=cfg["trust_remote_code"], local_files_only=not cfg["allow_network"])
    if h.get("revision"):
        kw["revision"] = h["revision"]
    if h.get("gguf_file"):
        kw["gguf_file"] = h["gguf_file"]
    else:
        kw["use_safetensors"] = True  # never unpickle .bin weights
    try:
        with gguf_py_reads_once():   # transformers reads a GGUF for the config, then again for the weights
            tok = (gguf_tokenizer.from_gguf(Path(src) / h["gguf_file"], out_dir) if local and h.get("gguf_file")
                   else None) or AutoTokenizer.from_pretrained(src, **kw)
            config = _gguf_config(src, Path(src) / h["gguf_file"], kw) if local and h.get("gguf_file") else None
            if config is not None:
                kw["config"] = config
            model = AutoModelForCausalLM.from_pretrained(src, dtype="float32", **kw)
    except gguf_tokenizer.TokenizerError as e:
        raise BaseModelError(f"model.hf.gguf_file: {e}") from None
    except (OSError, ValueError, RuntimeError) as e:
        raise BaseModelError(f"model.hf.path={src!r}: could not load a causal LM: {str(e).splitlines()[0]}") from None
    if h.get("gguf_file"):  # dequantised to fp32: save it as a plain model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.config.use_cache = True
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    if local and not h.get("gguf_file") and (Path(src) / "tokenizer.model").exists():
        shutil.copy(Path(src) / "tokenizer.model", out_dir / "tokenizer.model")
    return {"params": sum(p.numel() for p in model.parameters()), "source": src}


def _gguf_config(src: str, gguf_path: Path, kw: dict):
    """transformers' config of a GGUF where transformers 5.5 reads it differently from llama.cpp,
    else None (transformers' own): the head size (`<arch>.attention.key_length` is not mapped, so
    Qwen3/Gemma keep their config class's default, 128/256, and fail with a size mismatch) and
    Gemma 2/3's attention scale (left at 256; llama.cpp uses the head size, hidden/heads for 27B)."""
    f = gguf_tokenizer.fields(gguf_path)
    arch = f.get("general.architecture")
    hidden, heads, key_length = (f.get(f"{arch}.{k}") for k in ("embedding_length", "attention.head_count",
                                                                  "attention.key_length"))
    if arch not in ("qwen3", "qwen3moe", "gemma2", "gemma3") and not (
            key_length and hidden and heads and key_length * heads != hidden):
        return None   # transformers derives the same head size (hidden/heads): no second parse of the file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src, **kw)
    if key_length and getattr(config, "head_dim", None) not in (None, key_length):
        config.head_dim = int(key_length)
    if arch in ("gemma2", "gemma3") and key_length:
        big = config.num_hidden_layers == {"gemma2": 46, "gemma3": 62}[arch]   # llama.cpp's 27B test
        config.query_pre_attn_scalar = config.hidden_size // config.num_attention_heads if big else int(key_length)
    return config


def check_gguf_tokenizer(cfg: dict, out_dir: Path, data_dir: Path) -> dict | None:
    """On a GGUF import: the tokenizer saved in out_dir (as train will load it) against llama.cpp's
    tokenizer of the same file, on every curated prompt and response. None for other sources."""
    h = cfg.get("hf") or {}
    if cfg["source"] != "hf" or not h.get("gguf_file"):
        return None
    texts = [r[k] for f in sorted(data_dir.glob("*.jsonl")) for r in read_jsonl(f)
             for k in ("prompt", "response") if isinstance(r.get(k), str)]
    if not texts:
        raise BaseModelError(f"{data_dir}: no curated prompts or responses to check the GGUF tokenizer on")
    try:
        return gguf_tokenizer.require_agreement(load_tokenizer(out_dir), Path(h["path"]) / h["gguf_file"], texts,
                                                f"{data_dir}/*.jsonl")
    except gguf_tokenizer.TokenizerError as e:
        raise BaseModelError(str(e)) from None


def write_info(out_dir: Path, info: dict) -> None:
    (out_dir / "slmake_base.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
