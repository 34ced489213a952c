"""The `check` stage under real DVC: a bad spec fails before DVC removes any stage's outputs, a
valid one never reruns anything by itself, and a swapped base-model file reruns `base`."""

import hashlib

import pytest
import yaml

from e2e_utils import ROOT, make_project, micro_tickets, ran_stages, sh, tiny_llama

GUARD = ROOT / "tests/netguard"

pytestmark = pytest.mark.e2e

KEPT = ("build/data/train.jsonl", "reports/curation_ledger.csv", "reports/data_card.md", "reports/curation.json")


def digests(repo):
    return {p: hashlib.sha256((repo / p).read_bytes()).hexdigest() for p in KEPT}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("check_e2e")
    model = tiny_llama(root / "model")
    repo = root / "repo"
    micro_tickets(repo, 200)
    make_project(repo, {"data": {"source": "data/micro.jsonl"}, "model": {"hf": {"path": str(model)}}},
                 defaults={"model": "hf_local"})
    # dvc and every stage it runs under the socket guard (tests/netguard): see test_nothing_phones_home
    sh(f"env PYTHONPATH={GUARD}${{PYTHONPATH:+:$PYTHONPATH}} SLMAKE_NETGUARD_LOG={root / 'net.log'} dvc repro base", repo)
    return repo


def edit(repo, change):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("change,message", [
    (lambda p: p["data"].update(prompt_template="{instruction} {oops"), "data.prompt_template:"),
    (lambda p: p["data"]["filters"].update(drop_rules=[{"name": "x", "regex": "(["}]), "data.filters.drop_rules.0.regex"),
    (lambda p: p["data"].update(response_schema={"type": 5}), "data.response_schema: not a valid JSON Schema"),
    (lambda p: p["train"]["lora"].update(target_modules=["qkv"]), "train.lora.target_modules: ['qkv']"),
    (lambda p: p["data"].update(source="data/missing.jsonl"), "data.source: data/missing.jsonl not found"),
])
def test_bad_spec_fails_before_any_output_is_removed(repo, change, message):
    before = digests(repo)
    original = (repo / "params.yaml").read_text()
    edit(repo, change)
    try:
        res = sh("dvc repro", repo, check=False)
        assert res.returncode != 0
        assert message in res.stderr + res.stdout and "Traceback" not in res.stderr + res.stdout
        assert ran_stages(res.stdout) == set()
        assert digests(repo) == before  # the previous build is all still there
        assert (repo / "build/base/model.safetensors").exists()
    finally:
        (repo / "params.yaml").write_text(original)


def test_nothing_phones_home(repo):
    """dvc, check, curate and base (an HF import) made 0 attempts to reach another machine."""
    log = repo.parent / "net.log"
    assert (repo / "build/base/model.safetensors").exists()
    assert not log.exists() or log.read_text() == ""


def test_valid_spec_check_reruns_nothing(repo):
    assert ran_stages(sh("dvc repro base", repo).stdout) == set()


def test_swapped_base_model_file_reruns_base(repo):
    weights = yaml.safe_load((repo / "params.yaml").read_text())["model"]["hf"]["path"] + "/model.safetensors"
    with open(weights, "r+b") as f:  # one bit of the last weight
        f.seek(-1, 2)
        b = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([b[0] ^ 1]))
    assert ran_stages(sh("dvc repro base", repo).stdout) == {"base"}
