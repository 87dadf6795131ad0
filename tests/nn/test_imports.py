"""The core (quant, norm, nn, packed, sizes) is plain PyTorch: it imports with fairseq absent, and
nn/ imports nothing from diagnostics/."""
import subprocess

import pytest
import sys
import textwrap

from tests.fairseq_utils import ROOT


def test_core_imports_without_fairseq_and_without_diagnostics():
    code = textwrap.dedent("""
        import sys
        class HideFairseq:
            def find_spec(self, name, path=None, target=None):
                if name == "fairseq" or name.startswith("fairseq."):
                    raise ImportError("fairseq hidden by the test")
        sys.meta_path.insert(0, HideFairseq())
        import torch
        from nq_plugin.nn import NQLSTM
        import nq_plugin.quant, nq_plugin.norm, nq_plugin.sizes, nq_plugin.packed
        assert "fairseq" not in sys.modules
        assert not [m for m in sys.modules if m.startswith("nq_plugin.diagnostics")], \\
            [m for m in sys.modules if m.startswith("nq_plugin.diagnostics")]
        out, _ = NQLSTM(3, 4, quantizer="bc", norm="layer")(torch.randn(5, 2, 3))
        print("ok", tuple(out.shape))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ok (5, 2, 4)" in res.stdout


KIND_NAMES = {"fp", "bc", "tc", "bwn", "twn", "lab", "lat", "none", "weight", "layer", "batch",
              "power", "shared", "separate"}


def _string_constants(node):
    import ast
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _string_constants(elt)


def test_no_code_outside_quant_and_norm_compares_kind_names():
    """Each quantizer and normalization owns its behaviour: no ``x == "batch"`` or
    ``q.name in ("bc", "tc")`` anywhere else in the package."""
    import ast
    offenders = []
    for path in sorted((ROOT / "nq_plugin").rglob("*.py")):
        rel = path.relative_to(ROOT / "nq_plugin").as_posix()
        if rel.startswith(("quant/", "norm/")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            names, subjects = set(), []
            for side in [node.left, *node.comparators]:
                found = set(_string_constants(side))
                names |= found
                if not found:
                    subjects.append(ast.unparse(side).lower())
            # a kind name compared with something about a norm / quantizer / kind
            if names & KIND_NAMES and any(w in s for s in subjects
                                          for w in ("norm", "quant", "kind", "stats")):
                offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)


NATIVE_OPS = {"IDENTITY", "ROW_BLOCKS", "BATCH", "FIXED", "POWER_RUNNING", "POWER_WARMUP",
              "AFFINE"}


def test_no_code_outside_norm_branches_on_native_operations():
    """What a normalization's native form is (nq_plugin/csrc/native_ops.h) is the kind's own
    business: no ``form.op == NativeForm.AFFINE`` outside nq_plugin/norm (the packed step asks
    the kind, ``fused_step_terms``), and the C++ list is the only one with the numbers."""
    import ast
    offenders = []
    for path in sorted((ROOT / "nq_plugin").rglob("*.py")):
        rel = path.relative_to(ROOT / "nq_plugin").as_posix()
        if rel.startswith("norm/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(n, ast.Attribute) and n.attr in NATIVE_OPS
                       for side in sides for n in ast.walk(side)) or \
                        any(c in NATIVE_OPS for side in sides for c in _string_constants(side)):
                    offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)
    header = (ROOT / "nq_plugin" / "csrc" / "native_ops.h").read_text()
    assert all(f"X({op}," in header for op in NATIVE_OPS)
    cpp = (ROOT / "nq_plugin" / "csrc" / "recurrence.cpp").read_text()
    assert "NQ_NATIVE_OPS(NQ_OP)" in cpp and "AFFINE = 6" not in cpp


def test_native_operation_numbers_come_from_the_extension():
    from nq_plugin import native
    from nq_plugin.nn.recurrence import native_op
    module = native.extension()
    if module is None:
        pytest.skip(f"the native extension does not build here: {native.build_error()}")
    ops = module.native_ops()
    assert set(ops) == NATIVE_OPS and len(set(ops.values())) == len(ops)
    assert all(native_op(name) == number for name, number in ops.items())
    with pytest.raises(ValueError, match="no operation 'SOFTMAX'"):
        native_op("SOFTMAX")
