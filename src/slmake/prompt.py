"""Prompt rendering: the spec's `data.prompt_template` applied to one instruction. Curation (the
train, val and test prompts), distillation, serving and monitoring all render prompts here, so a
model is evaluated and served on the text it was trained on."""

from __future__ import annotations


def format_prompt(template: str, instruction: str) -> str:
    """Render the spec's prompt template; training, evaluation and serving all go through here."""
    return template.format(instruction=instruction)
