"""evaluate: base + merged fp32 models on the test and validation splits -> reports/evaluate.json (test
figures, and val_exact_match / val_valid / val_n: what a search selects on) + build/evaluate/ (the
reference outputs every artifact is compared with, per split, and the tokenizer that encodes prompts)"""

import json
from pathlib import Path

from slmake import process_setup
from slmake.checks import stage_params

params = stage_params("eval", "data", "seed")
ev, data = params["eval"], params["data"]
process_setup.setup(threads=ev["threads"], seed=params["seed"])

from slmake.base_model import load_tokenizer  # noqa: E402
from slmake.evaluate import encode_prompts, evaluate_splits, test_rows, val_figures, val_rows  # noqa: E402
from slmake.io import atomic_dir, write_json_atomic  # noqa: E402
from slmake.runtimes.guide import Guide, decode_constraint  # noqa: E402

merged, base = Path("build/train/merged"), Path("build/base")
tok = load_tokenizer(merged)
rows = test_rows(Path("build/data"), ev["limit"])
prompts = encode_prompts(tok, rows)
schema = data["response_schema"]
# decode as served (eval.constrained; null: under the schema's grammar whenever serve enforces it)
gbnf, why_free = decode_constraint(ev.get("constrained"), schema, data.get("response_format", "json"))
guide = Guide(gbnf, (merged / "tokenizer.json").read_text(encoding="utf-8")) if gbnf else None
run = {"max_new_tokens": ev["max_new_tokens"], "response_schema": schema, "batch_size": ev["batch_size"],
       "guide": guide}
# the validation split, decoded the same way (eval.limit spreads it the same way): what selection reads
vrows = val_rows(Path("build/data"), ev["limit"])
vprompts = encode_prompts(tok, vrows)


def splits(name: str) -> list:
    """The test split, then the validation split when there is one: one model load for both."""
    return [(rows, prompts, f"evaluate {name}")] + ([(vrows, vprompts, f"evaluate {name} (val)")] if vrows else [])


(base_m, _, _), *base_val = evaluate_splits(base, tok, splits("base"), **run)
(ft_m, tokens, texts), *ft_val = evaluate_splits(merged, tok, splits("fine-tuned"), **run)
vtokens, vtexts = [], []
if vrows:
    base_m.update(val_figures(base_val[0][0]))
    ft_m.update(val_figures(ft_val[0][0]))
    vtokens, vtexts = ft_val[0][1:]

with atomic_dir("build/evaluate") as tmp:
    for name, split in (("reference.jsonl", zip(rows, prompts, tokens, texts)),
                        ("val_reference.jsonl", zip(vrows, vprompts, vtokens, vtexts))):
        with open(tmp / name, "w", encoding="utf-8") as f:
            for r, p, t, x in split:
                f.write(json.dumps({"id": r["id"], "prompt_ids": p, "tokens": t, "text": x,
                                    "expected": r["response"]}, ensure_ascii=False) + "\n")
    tok.save_pretrained(str(tmp / "tokenizer"))
write_json_atomic("reports/evaluate.json", {"base": base_m, "finetuned": ft_m})
print(f"evaluate: base exact_match {base_m['exact_match']:.3f} -> fine-tuned {ft_m['exact_match']:.3f} "
      f"(valid {ft_m['valid']:.3f}, n={ft_m['n']})")
if vrows:
    print(f"evaluate: validation split: base exact_match {base_m['val_exact_match']:.3f} -> fine-tuned "
          f"{ft_m['val_exact_match']:.3f} (valid {ft_m['val_valid']:.3f}, n={ft_m['val_n']})")
else:
    print("evaluate: no validation split (data.split.val gave no rows): no val_* figures to select on")
if guide is not None:
    print(f"evaluate: decoded under the response schema's grammar, as served; free decode: fine-tuned "
          f"exact_match {ft_m['exact_match_free']:.3f}, valid {ft_m['valid_free']:.3f}")
else:
    print(f"evaluate: free decode ({why_free})")
