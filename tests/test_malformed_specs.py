"""A corpus of malformed specs (tests/fixtures/malformed_specs/cases.yaml): each must be refused
before any work starts, by what the check stage and `slmake check` run, with a message that names
what is wrong -- never accepted, never a traceback. (Random mutations: test_spec_properties.py.)"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from slmake.checks import check, check_params
from slmake.spec import SpecError, compose, validate

ROOT = Path(__file__).resolve().parents[1]
CASES = yaml.safe_load((Path(__file__).parent / "fixtures/malformed_specs/cases.yaml").read_text())


@pytest.fixture(scope="module")
def default_spec():
    return compose(ROOT / "conf")


def _sub(value, tmp: Path):
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: _sub(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v, tmp) for v in value]
    return value


def mutate(spec: dict, case: dict, tmp: Path) -> dict:
    spec = copy.deepcopy(spec)
    for dotted, value in (case.get("set") or {}).items():
        *parents, last = dotted.split(".")
        node = spec
        for p in parents:
            node = node[p]
        node[last] = _sub(value, tmp)
    for dotted in case.get("delete") or []:
        *parents, last = dotted.split(".")
        node = spec
        for p in parents:
            node = node[p]
        del node[last]
    return spec


def make_files(case: dict, tmp: Path) -> None:
    for rel, text in (case.get("files") or {}).items():
        p = tmp / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    if case.get("hf"):
        from test_checks import LLAMA, hf_folder

        h = dict(case["hf"])
        folder = tmp / h.pop("folder")
        hf_folder(folder, **{**h, "modules": tuple(h.get("modules", LLAMA))})


def problems_for(case: dict, spec: dict, tmp: Path) -> list[str]:
    """What the user would see: the check stage's problems (params.yaml read strictly, schema,
    semantic checks), or compose's error for conf/ and override cases."""
    make_files(case, tmp)
    if "conf" in case or "overrides" in case:
        conf = tmp / "conf"
        shutil.copytree(ROOT / "conf", conf)
        if "conf" in case:
            f = conf / case["conf"]["file"]
            f.write_text(f.read_text() + case["conf"]["append"])
        try:
            composed = compose(conf, case.get("overrides", []))
        except SpecError as e:
            return [str(e)]
        return validate(composed) or check(composed)
    params = tmp / "params.yaml"
    if "params_raw" in case:
        if case["params_raw"] is not None:
            params.write_text(case["params_raw"])
    elif "params_raw_bytes" in case:
        params.write_bytes(case["params_raw_bytes"].encode("latin-1"))
    else:
        text = yaml.safe_dump(mutate(spec, case, tmp), sort_keys=False)
        if "params" in case:
            old, new = case["params"]
            assert text.count(old) >= 1, f"{case['id']}: {old!r} not in params.yaml"
            text = text.replace(old, new, 1)
        params.write_text(text)
    return check_params(params)[1]


def test_corpus_is_big_and_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_malformed_spec_is_refused_with_a_message_naming_it(case, default_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths (data/, models/) resolve as in a project
    found = problems_for(case, default_spec, tmp_path)  # an exception here is a traceback for the user
    message = "\n".join(found)
    assert found, f"{case['id']}: accepted"
    assert "Traceback" not in message
    for words in case["expect"]:
        assert words in message, f"{case['id']}: {words!r} not in:\n{message}"
