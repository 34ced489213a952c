"""The spec validator: every bad spec gets a message naming the key path, the value and what is allowed."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slmake.checks import stage_params
from slmake.spec import SpecError, compose, validate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="module")
def default_spec():
    return compose(CONF)


def test_default_spec_is_valid_and_matches_committed_params(default_spec):
    assert validate(default_spec) == []
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == default_spec, "params.yaml is stale: run `slmake check --write params.yaml`"


def _bad(spec, path, value):
    spec = copy.deepcopy(spec)
    node = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return validate(spec)


@pytest.mark.parametrize("path,value,expected", [
    ("train.lora.r", 0, "train.lora.r: 0 is out of range, expected a value >= 1"),
    ("train.lr", "fast", "train.lr: 'fast' has type str, expected number"),
    ("bench.threads", 1.5, "bench.threads: 1.5 has type float, expected integer"),
    ("model.source", "ftp", "model.source: 'ftp' is not one of ['scratch', 'hf']"),
    ("data.split.test", 0.9, "data.split.test: 0.9 is out of range, expected a value <= 0.5"),
    ("model.scratch.hidden_size", 100, "model.scratch.hidden_size: 100 must be a multiple of 16"),
    ("targets.cpu.gguf.quants", ["q9_z"], "targets.cpu.gguf.quants.0: 'q9_z' is not one of"),
    ("eval.max_new_tokens", -1, "eval.max_new_tokens: -1 is out of range"),
])
def test_bad_values_name_path_value_and_allowed(default_spec, path, value, expected):
    problems = _bad(default_spec, path, value)
    assert any(p.startswith(expected) for p in problems), problems


def test_unknown_keys_are_errors(default_spec):
    spec = copy.deepcopy(default_spec)
    spec["train"]["learning_rate"] = 1e-4
    spec["colour"] = "blue"
    problems = validate(spec)
    assert "train: unknown key(s) ['learning_rate']; allowed keys: ['batch_size', 'epochs', 'grad_accum', 'group_by_length', 'lora', 'lr', 'max_length', 'max_steps', 'method', 'processes', 'quant', 'save_steps', 'threads', 'warmup_ratio']" in problems
    assert any(p.startswith("the top level: unknown key(s) ['colour']") for p in problems)


def test_missing_required_key(default_spec):
    spec = copy.deepcopy(default_spec)
    del spec["bench"]["repeats"]
    assert "bench: missing required key(s) ['repeats']" in validate(spec)


def test_source_specific_section_required(default_spec):
    spec = copy.deepcopy(default_spec)
    spec["model"]["source"] = "hf"
    assert "model: missing required key(s) ['hf']" in validate(spec)


def test_unknown_target_is_an_error(default_spec):
    spec = copy.deepcopy(default_spec)
    spec["targets"]["tpu"] = {}
    assert any(p.startswith("targets: unknown key(s) ['tpu']") for p in validate(spec))


def test_compose_overrides_and_unknown_group_option():
    spec = compose(CONF, ["train.lora.r=4", "bench.threads=1"])
    assert spec["train"]["lora"]["r"] == 4 and spec["bench"]["threads"] == 1
    with pytest.raises(SpecError, match=r"available options for 'model': \[.*'llama_tiny_scratch'"):
        compose(CONF, ["model=no_such_model"])


def test_stage_params_exits_with_message_not_traceback(tmp_path, default_spec, capsys):
    spec = copy.deepcopy(default_spec)
    spec["train"]["batch_size"] = 0
    spec["bench"]["repeats"] = 0  # not this stage's slice: must not be reported by train
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exc:
        stage_params("train", "seed", path=tmp_path / "params.yaml")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 0 is out of range, expected a value >= 1" in err
    assert "bench.repeats" not in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_check_cli_prints_spec_or_errors():
    ok = subprocess.run([sys.executable, "-m", "slmake.cli", "check", "train.lora.r=4"], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and yaml.safe_load(ok.stdout)["train"]["lora"]["r"] == 4
    bad = subprocess.run([sys.executable, "-m", "slmake.cli", "check", "train.lora.r=-3", "+train.foo=1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "train.lora.r: -3 is out of range" in bad.stderr
    assert "train: unknown key(s) ['foo']" in bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- conf/ YAML problems

@pytest.fixture
def conf(tmp_path):
    import shutil

    shutil.copytree(CONF, tmp_path / "conf")
    return tmp_path / "conf"


def _compose_error(conf, overrides=()):
    with pytest.raises(SpecError) as exc:
        compose(conf, list(overrides))
    assert "Traceback" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("text,expected", [
    ("\tlr: 0.1\n", "conf/train/lora_fp32_cpu.yaml, line {n}, key 'lora.target_modules.lr': found character '\\t' that cannot "
                    "start any token (a tab character: YAML indents with spaces only)"),
    ("lr: 0.3\n", "conf/train/lora_fp32_cpu.yaml, line {n}, key 'lr': duplicate key 'lr' (first on line"),
    ("extra: [1, 2\n", "conf/train/lora_fp32_cpu.yaml, line {n}, key 'extra': expected ',' or ']', but got "
                       "'<stream end>' (a [ opened here is not closed)"),
    ("note: \"unclosed\n", "conf/train/lora_fp32_cpu.yaml, line {n}, key 'note'"),
])
def test_conf_yaml_errors_name_file_line_and_key(conf, text, expected):
    f = conf / "train/lora_fp32_cpu.yaml"
    n = len(f.read_text().splitlines()) + 1
    f.write_text(f.read_text() + text)
    assert expected.format(n=n, n1=n + 1) in _compose_error(conf)


def test_bad_interpolation_names_key_and_file(conf):
    f = conf / "train/lora_fp32_cpu.yaml"
    f.write_text(f.read_text().replace("lr: ", "lr: ${nope.lr} #", 1))
    line = next(i for i, l in enumerate(f.read_text().splitlines(), 1) if "${nope.lr}" in l)
    msg = _compose_error(conf)
    assert msg.startswith("train.lr: Interpolation key 'nope.lr' not found")
    assert f"(in conf/train/lora_fp32_cpu.yaml, line {line})" in msg


def test_interpolation_in_an_override(conf):
    assert _compose_error(conf, ["train.lr=${nope}"]).startswith("train.lr: Interpolation key 'nope' not found")


def test_group_option_listed_twice(conf):
    assert "targets: ['cpu'] listed twice in ['cpu', 'intel_npu', 'cpu']" in \
        _compose_error(conf, ["targets=[cpu,intel_npu,cpu]"])
    top = conf / "config.yaml"
    top.write_text(top.read_text().replace("- targets: [cpu]", "- targets: [cpu, cpu]"))
    assert "targets: ['cpu'] listed twice" in _compose_error(conf)


def test_params_yaml_duplicate_key_is_an_error(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("seed: 0\nseed: 1\n")
    with pytest.raises(SystemExit):
        stage_params("seed", path=tmp_path / "params.yaml")
    assert "params.yaml, line 2, key 'seed': duplicate key 'seed' (first on line 1)" in capsys.readouterr().err
