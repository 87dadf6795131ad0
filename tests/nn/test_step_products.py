"""How the loop forms its step products (nq_plugin/nn/step_products.py): the team's split,
the parts' bounds as recurrence.cpp cuts them, the weights handed to the native loop
(StepWeights) and the timing that picks oneDNN's layout for a thread's part."""
import pytest
import torch

from nq_plugin import native as loader
from nq_plugin.nn import step_products


@pytest.fixture(scope="module")
def built():
    module = loader.extension()
    assert module is not None, f"the native extension did not build: {loader.build_error()}"
    return module


@pytest.fixture
def threads():
    """set(n): torch's intra-op threads for the rest of the test, restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_the_parts_are_recurrence_cpps_split():
    assert step_products.part_bounds(28, 3) == [(0, 10), (10, 19), (19, 28)]
    assert step_products.part_bounds(7, 2) == [(0, 4), (4, 7)]
    assert step_products.part_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)]


def test_the_team_is_the_threads_at_most_one_a_row(threads):
    threads(3)
    assert step_products.team_size(20) == 3
    assert step_products.team_size(2) == 2
    threads(1)
    assert step_products.team_size(20) == 1


@pytest.mark.parametrize("transposed", [False, True], ids=["forward W_h", "backward W_h^T"])
def test_a_column_split_gets_each_threads_columns_cut_from_the_weight(
        built, threads, backend_choice, transposed):
    """One plain (K, N_part) part per thread, each its rows of the product's weight (W_h
    forward; W_h^T backward, whose rows are W_h's columns), contiguous."""
    backend_choice(step_split="columns")
    threads(3)
    w_hh = torch.randn(28, 7, dtype=torch.float64)  # float64: never oneDNN's layout
    weight = w_hh.t() if transposed else w_hh
    plan = step_products.step_weights(weight, 5, training=True)
    assert not plan.packed and len(plan.parts) == 3
    for part, (b, e) in zip(plan.parts, step_products.part_bounds(weight.shape[0], 3)):
        assert part.is_contiguous()
        assert torch.equal(part, weight[b:e].t())


def test_a_rows_split_gets_the_whole_weight(built, threads, backend_choice):
    backend_choice(step_split="rows")
    threads(2)
    w_hh = torch.randn(28, 7, dtype=torch.float64)
    plan = step_products.step_weights(w_hh, 5, training=True)
    assert not plan.packed and len(plan.parts) == 1 and torch.equal(plan.parts[0], w_hh.t())
    back = step_products.step_weights(w_hh.t(), 5, training=True)
    assert torch.equal(back.parts[0], w_hh)  # W_h itself: no copy needed


def test_a_kept_layout_is_used_whole(built, threads, backend_choice):
    """An eval caller's kept layout: the team splits the batch rows, whatever step_split."""
    backend_choice(step_split="columns")
    threads(2)
    w_hh = torch.randn(28, 7)
    layout = torch.zeros(3)  # what the caller keeps is handed over as it is
    plan = step_products.step_weights(w_hh, 5, training=False, layout=layout)
    assert plan.packed and len(plan.parts) == 1 and plan.parts[0] is not None
    assert torch.equal(plan.parts[0], layout)


def test_the_parts_layout_speedup_is_timed_once():
    speedup = step_products.part_layout_speedup(20, 300, 600)
    assert speedup >= 0 and step_products.part_layout_speedup(20, 300, 600) == speedup
    assert step_products.part_layout_speedup.cache_info().hits >= 1
