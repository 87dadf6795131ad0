"""nq_plugin/backend.py: the step split and the step GEMM, two of the execution choices, and
OpenMP's thread limit as it is read."""
import pytest

from nq_plugin import backend
from nq_plugin.backend import Backend, StepGemm, StepSplit, use


@pytest.mark.parametrize("field, name, enum, given, value, bad, choices", [
    ("step_split", "NQ_PLUGIN_STEP_SPLIT", StepSplit, "Rows", StepSplit.ROWS, "diagonal",
     "auto, columns or rows"),
    ("step_gemm", "NQ_PLUGIN_STEP_GEMM", StepGemm, "PANELS", StepGemm.PANELS, "blas",
     "auto, plain, onednn or panels")])
def test_a_choice_comes_from_the_environment_and_is_checked(field, name, enum, given, value,
                                                            bad, choices):
    assert getattr(Backend(), field) is enum.AUTO
    assert getattr(Backend.from_environ({name: given}), field) is value
    with pytest.raises(ValueError, match=f"{name}='{bad}': use {choices}"):
        Backend.from_environ({name: bad})
    with use(**{field: value.value}) as chosen:
        assert getattr(chosen, field) is value


@pytest.mark.parametrize("value,limit", [("", None), ("abc", None), ("0", None), (" 3 ", 3)])
def test_the_thread_limit_is_read_as_openmp_reads_it(monkeypatch, value, limit):
    monkeypatch.setenv("OMP_THREAD_LIMIT", value)
    backend.omp_thread_limit.cache_clear()
    try:
        assert backend.omp_thread_limit() == limit
    finally:
        backend.omp_thread_limit.cache_clear()
