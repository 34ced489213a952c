"""Property test (hypothesis) over random mutations of the default spec: the checks never crash,
and whatever they accept is well-formed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from slmake.checks import check
from slmake.spec import compose, validate

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_spec():
    return compose(ROOT / "conf")


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32),
                    st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=2), st.just({}))


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


@pytest.fixture(scope="module")
def leaf_paths(default_spec):
    # data.source is left alone: a random string like "." would make the check walk the whole repo
    return [p for p in _paths(default_spec) if p[:2] != ("data", "source")]


STAGES = [("data",), ("model", "seed"), ("train", "seed"), ("eval", "data", "seed"), ("targets",),
          ("bench", "eval", "data")]


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mutation_is_refused_by_name_or_usable_never_a_crash(default_spec, leaf_paths, data):
    """Set 1-3 random keys of the default spec to random values, or delete them. The checks never
    raise; a refused spec gets a message naming the section it broke; an accepted one passes every
    stage's own checks too and its data slice resolves (what curate does first)."""
    spec = copy.deepcopy(default_spec)
    changed = []
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(leaf_paths))
        node = spec
        for p in path[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        if data.draw(st.booleans()) and len(path) > 1:
            del node[path[-1]]
        else:
            node[path[-1]] = data.draw(SCALARS)
        changed.append(path)
    found = validate(spec) or check(spec)
    if found:
        sections = {".".join(map(str, p[:-1])) or str(p[0]) for p in changed} | {str(p[0]) for p in changed}
        assert any(s in problem for problem in found for s in sections), (changed, found)
        return
    from slmake.data.config import resolve

    resolve(spec["data"])
    for keys in STAGES:
        assert validate(spec, only=keys) == [] and check(spec, only=keys) == [], keys
