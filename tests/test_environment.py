"""The pinned environment's deliberate gaps (docs/design.md, one environment pinned): scikit-learn is
left out because transformers imports sklearn.metrics in every process where it is installed (~1.5 s
of each stage's start), while nncf, the one package that declares it, never imports it."""

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports_sklearn(path: Path) -> bool:
    source = path.read_bytes()
    if b"sklearn" not in source:
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(n == "sklearn" or n.startswith("sklearn.") for n in names):
            return True
    return False


def test_lock_and_install_leave_scikit_learn_out():
    lock = (ROOT / "requirements/lock.txt").read_text().splitlines()
    assert not [ln for ln in lock if ln.split("==")[0] in ("scikit-learn", "nncf")]  # nncf: --no-deps
    install = (ROOT / "install.sh").read_text()
    assert '--no-deps "optimum-intel==2.2.0" "nncf==3.4.0"' in install


def test_scikit_learn_is_not_installed_and_nncf_never_imports_it():
    try:
        nncf = importlib.metadata.distribution("nncf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("nncf is not installed (./install.sh)")
    assert importlib.util.find_spec("sklearn") is None, (
        "scikit-learn is installed: every transformers process imports it (~1.5 s); ./install.sh removes it")
    sources = [Path(nncf.locate_file(f)) for f in nncf.files or [] if str(f).endswith(".py")]
    assert len(sources) > 100   # nncf's own files, read from its RECORD
    assert not [str(p) for p in sources if _imports_sklearn(p)], "nncf imports sklearn now: install it again"


def test_the_check_finds_an_sklearn_import(tmp_path):
    for text, found in (("from sklearn.metrics import roc_curve\n", True), ("import sklearn\n", True),
                        ("def f():\n    import sklearn.cluster as c\n", True), ("import sklearnx\n", False),
                        ("# sklearn\nx = 'import sklearn'\n", False)):
        (tmp_path / "m.py").write_text(text)
        assert _imports_sklearn(tmp_path / "m.py") is found, text
