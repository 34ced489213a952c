"""Record shapes -> (instruction, raw response, label): the one place that knows each layout.

* instruction:        columns.instruction -> columns.response
* alpaca:             instruction (+ "\\n\\n" + input when input is non-empty) -> output
* prompt_completion:  prompt -> completion
* chat:               messages [{role, content}, ...]; the last message must be the assistant's
                      and is the response; a single user turn (after an optional system message)
                      is the instruction as is, longer histories are rendered "Role: content"
                      paragraphs
* classification:     classification.instruction_template with {text} -> the label, as plain
                      text (response_format text) or {json_key: label} (response_format json)

Records reach `extract` only after `validate.RecordValidator` accepted them, so keys and types
are known to be right; what is left to reject here is a chat that does not end with the assistant
or uses an unknown role.
"""

from __future__ import annotations

from typing import Any

from .normalize import normalize


class ShapeError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return normalize(str(value))


class ShapeReader:
    def __init__(self, cfg: dict):
        self.shape, self.cols = cfg["shape"], cfg["columns"]
        self.label_col = self.cols.get("label")
        self.chat = cfg["chat"]
        self.template = cfg["classification"]["instruction_template"]
        self.json_key = cfg["classification"]["json_key"]
        self.response_format = cfg["response_format"]
        self.columns_used = sorted(set(self.cols.values()))

    def extract(self, rec: dict) -> tuple[str, Any, str | None]:
        """(instruction, raw response, label from the label column or None)."""
        c, shape = self.cols, self.shape
        label = _label(rec.get(self.label_col)) if self.label_col else None
        if shape == "instruction":
            return rec[c["instruction"]], rec[c["response"]], label
        if shape == "alpaca":
            extra = rec.get(c["input"]) if "input" in c else None
            instr = rec[c["instruction"]]
            if isinstance(extra, str) and extra.strip():
                instr = f"{instr}\n\n{extra}"
            return instr, rec[c["output"]], label
        if shape == "prompt_completion":
            return rec[c["prompt"]], rec[c["completion"]], label
        if shape == "chat":
            return (*self._chat(rec[c["messages"]]), label)
        # classification
        instr = self.template.format(text=rec[c["text"]])
        response = label if self.response_format == "text" else {self.json_key: label}
        return instr, response, label

    def _chat(self, messages: list[dict]) -> tuple[str, str]:
        ch = self.chat
        role_k, content_k = ch["role_key"], ch["content_key"]
        names = {ch["system"]: "System", ch["user"]: "User", ch["assistant"]: "Assistant"}
        for i, m in enumerate(messages):
            if m[role_k] not in names:
                raise ShapeError("invalid_record", f"{self.cols['messages']}.{i}.{role_k}: {m[role_k]!r} is "
                                 f"not one of {list(names)}")
        if messages[-1][role_k] != ch["assistant"]:
            raise ShapeError("invalid_record", f"{self.cols['messages']}: the last message must be from "
                             f"{ch['assistant']!r} (it is the response), got {messages[-1][role_k]!r}")
        history = messages[:-1]
        if not any(m[role_k] == ch["user"] for m in history):
            raise ShapeError("invalid_record", f"{self.cols['messages']}: no {ch['user']!r} message before "
                             "the response")
        roles = [m[role_k] for m in history]
        if roles == [ch["user"]]:
            instr = history[0][content_k]
        elif roles == [ch["system"], ch["user"]]:
            instr = f"{history[0][content_k]}\n\n{history[1][content_k]}"
        else:
            instr = "\n\n".join(f"{names[m[role_k]]}: {m[content_k]}" for m in history)
        return instr, messages[-1][content_k]
