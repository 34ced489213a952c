"""The layering the design card promises: runtimes import nothing from targets (bench and serve both
drive artifacts through runtimes), and a target is one folder holding its schema."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src/slmake"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_runtimes_do_not_import_targets():
    for f in sorted((SRC / "runtimes").glob("*.py")):
        bad = {n for n in _imports(f) if "targets" in n}
        assert not bad, f"{f.name} imports {bad}"


def test_every_registered_target_is_one_folder_with_its_schema():
    from slmake.targets import REGISTRY, load

    for name in REGISTRY:
        folder = SRC / "targets" / name
        assert (folder / "__init__.py").is_file() and (folder / "schema.json").is_file(), name
        module = load(name)
        for fn in ("probe", "check", "compile", "open_runner"):
            assert callable(getattr(module, fn)), (name, fn)
    assert not (SRC / "qnn_export.py").exists() and not (SRC / "schema/targets").exists()


def test_target_checks_run_before_anything_is_built():
    """Settings the schema accepts but a target cannot build (nothing to build, a SoC/HTP pair QNN
    would accept and the device refuse) are caught by `slmake check` / the check stage."""
    import copy

    import yaml

    from slmake.checks import check

    spec = yaml.safe_load((SRC.parents[1] / "params.yaml").read_text())
    assert check(spec) == []
    empty = copy.deepcopy(spec)
    empty["targets"]["cpu"] = {"gguf": {"quants": []}, "onnx_genai": {"precisions": []}}
    assert check(empty) == ["targets.cpu: nothing to build: gguf.quants and onnx_genai.precisions are both empty"]
    qnn = copy.deepcopy(spec)
    qnn["targets"]["qualcomm_npu"] = yaml.safe_load((SRC.parents[1] / "conf/targets/qualcomm_npu.yaml").read_text())["qualcomm_npu"]
    qnn["targets"]["qualcomm_npu"]["context_binary"].update(enabled=True, soc_model=60, htp_arch=79)
    assert any("soc_model 60 has HTP v73" in p for p in check(qnn))
