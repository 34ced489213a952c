"""slmake.gguf_meta reads exactly what gguf-py's GGUFReader reads (every field's contents(), the
tensor table), and hands what it does not take to GGUFReader."""

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from slmake import gguf_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / ".venv/share/slmake/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"


def reference(path: Path) -> gguf_meta.Header:
    """What gguf-py's GGUFReader reads (gguf_meta's fallback is exactly that)."""
    return gguf_meta._with_gguf_py(path)


def every_type(path: Path) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -7)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 1 / 3)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "naïve café — 東京 ✓")
    w.add_string("t.empty", "")
    w.add_array("t.strs", ["<s>", "", "▁the", "Ġworld", "<0x0A>"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_array("t.bools", [True, False, True])
    w.add_array("t.none", [])
    w.add_tensor("tok_embd.weight", np.ones((3, 4), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_every_value_type_and_the_tensor_table_match_gguf_py(tmp_path):
    path = every_type(tmp_path / "t.gguf")
    got, want = gguf_meta.read(path), reference(path)
    assert got == want
    assert list(got.fields) == list(want.fields)   # same order too
    assert got.fields["t.strs"] == ["<s>", "", "▁the", "Ġworld", "<0x0A>"] and got.fields["t.u64"] == 2**63 + 5
    assert [gguf_meta.type_name(t.type_id) for t in got.tensors] == ["F32", "F16"]


def test_what_it_does_not_take_gets_gguf_pys_answer(tmp_path):
    path = every_type(tmp_path / "t.gguf")
    raw = bytearray(path.read_bytes())
    raw[4:8] = (1).to_bytes(4, "little")   # GGUF v1: not read here
    (tmp_path / "v1.gguf").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="version 1"):
        gguf_meta.read(tmp_path / "v1.gguf")
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:60])   # a header cut short
    with pytest.raises(Exception) as fast:
        gguf_meta.read(tmp_path / "cut.gguf")
    with pytest.raises(Exception) as slow:
        gguf.GGUFReader(str(tmp_path / "cut.gguf"))
    assert type(fast.value) is type(slow.value)


@pytest.mark.slow   # gguf-py takes ~4 s on this 49k-token vocabulary
@pytest.mark.skipif(not SMOLLM.is_file(), reason=f"{SMOLLM} missing (install.sh fetches it)")
def test_a_real_gguf_reads_the_same():
    assert gguf_meta.read(SMOLLM) == reference(SMOLLM)


def test_gguf_py_reads_each_file_once_inside_the_block_only(tmp_path):
    a, b = every_type(tmp_path / "a.gguf"), every_type(tmp_path / "b.gguf")
    real = gguf.GGUFReader
    with gguf_meta.gguf_py_reads_once():
        first = gguf.GGUFReader(str(a))
        assert gguf.GGUFReader(a) is first            # str or Path, the same file: the first reader
        assert gguf.GGUFReader(str(b)) is not first
        assert isinstance(first, real) and first.fields.keys() == real(str(a)).fields.keys()
    assert gguf.GGUFReader is real and gguf.GGUFReader(str(a)) is not first
    with pytest.raises(RuntimeError), gguf_meta.gguf_py_reads_once():
        raise RuntimeError("a failed import")
    assert gguf.GGUFReader is real                    # restored on the way out of a failure too
