"""Knowledge distillation: a teacher labels raw inputs, a human reviews a sample, curate trains on them.

label.py   reads the inputs and the labelled set, measures the teacher on the labelled set (the
           ceiling), labels the inputs, quarantines invalid outputs, draws the review sample
teachers.py  the teacher: a GGUF (llama.cpp), a transformers folder, or an OpenAI-compatible URL
prompts.py   few-shot prompts, teacher output -> a schema-valid response, records in the data shape
gate.py      the review gate curate runs first: no reviewed sample, no training
"""


class DistillError(Exception):
    """A distillation input or teacher that cannot be used; the message is meant for the user as is."""
