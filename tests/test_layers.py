"""The layering the design card promises: the import graph of src/slmake has no cycle; spec.py is
its bottom layer and the semantic checks sit above what they check; in-function imports of
slmake's own modules only defer a heavy library; `slmake --help` imports no numpy; runtimes import
nothing from targets (bench and serve both drive artifacts through runtimes), and a target is one
folder holding its schema."""

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src/slmake"
# Libraries worth deferring into a function: big imports, or optional toolchains.
HEAVY = {"torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "safetensors",
         "sentencepiece", "onnx", "onnxruntime", "onnxruntime_genai", "openvino", "openvino_genai",
         "optimum", "nncf", "llama_cpp", "gguf", "fastapi", "uvicorn", "starlette", "numpy", "pyarrow",
         "prometheus_client", "dvclive", "datasketch", "presidio_analyzer", "hydra", "omegaconf", "matplotlib",
         "playwright", "spacy"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str) -> str:
    """A dotted name as the module (or package) that defines it; a third-party name as its top level."""
    if not name.startswith("slmake"):
        return name.split(".")[0]
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


@cache
def _edges(module: str) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every import statement of ``module`` that
    runs (those under `if TYPE_CHECKING:` do not)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    typing_only = {id(n) for f in ast.walk(tree) if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
                   for n in ast.walk(f)}  # `if TYPE_CHECKING:` imports never run
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        if id(node) in typing_only:
            continue
        out += [(_resolve(n), id(node) in local, node.lineno) for n in names]
    return [e for e in out if e[0] != module]


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    graph = {}
    for m in MODULES:
        deps = {d for d, local, _ in _edges(m) if d in MODULES and not (top_level_only and local)}
        parents = {m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)}  # importing a.b.c runs a/, a/b/
        graph[m] = deps | {p for p in parents if top_level_only}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_graph_has_no_cycle():
    """Every import counts, in-function ones too: a circle dodged by a local import is still one."""
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_spec_is_the_bottom_layer_and_checks_sit_above():
    spec = {d for d, _, _ in _edges("slmake.spec") if d.startswith("slmake")}
    assert spec <= {"slmake"}, f"spec.py imports {spec}"
    users = {m for m in MODULES if "slmake.checks" in {d for d, _, _ in _edges(m)}}
    assert users <= {"slmake.cli", "slmake.monitor.cli"}, f"only entry points import checks: {users}"


def _heavy_closures() -> dict[str, set[str]]:
    """Per module, the heavy libraries that importing it pulls in through top-level imports."""
    graph, memo = _graph(top_level_only=True), {}

    def heavy(m: str) -> set[str]:
        if m not in memo:
            memo[m] = set()  # the top-level graph has no cycle (the test above), this is just a guard
            memo[m] = {d for d, local, _ in _edges(m) if d in HEAVY and not local}.union(
                *(heavy(d) for d in graph[m]))
        return memo[m]

    return {m: heavy(m) for m in MODULES}


def test_in_function_imports_of_slmake_modules_only_defer_heavy_libraries():
    """A function-level `from .x import y` is there to keep a heavy library (numpy, torch,
    fastapi...) out of an import that does not need it, never to dodge a cycle."""
    heavy = _heavy_closures()
    bad = [f"{MODULES[m].relative_to(SRC.parent)}:{line} imports {d}"
           for m in MODULES for d, local, line in _edges(m) if local and d in MODULES and not heavy[d]]
    assert not bad, "move these to the top of the file:\n" + "\n".join(bad)


def test_help_imports_no_numpy():
    code = ("import sys\nfrom slmake import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'numpy', 'torch', 'transformers', 'pyarrow', 'fastapi'} & set(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_target_folders_are_the_registry():
    """spec.py finds the target schemas by folder (it imports nothing from targets)."""
    from slmake.spec import target_names
    from slmake.targets import REGISTRY

    assert target_names() == sorted(REGISTRY)


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
        for fn in ("probe", "validate_settings", "compile", "open_runner"):
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
