"""nq_plugin/derived.py: an entry is built once, again when its key changes, and everything is
dropped when the module's tensors change (in place, replaced, moved, converted); copies start
empty."""
import copy
import pickle

import torch
from torch import nn

from nq_plugin.derived import DerivedCache


def test_entries_follow_their_key_and_the_module_tensors():
    module = nn.Linear(3, 2)
    cache = DerivedCache()
    builds = []

    def build(tag):
        builds.append(tag)
        return len(builds)

    assert cache.get(module, "a", 1, lambda: build("a1")) == 1
    assert cache.get(module, "a", 1, lambda: build("again")) == 1  # kept
    assert cache.get(module, "b", 0, lambda: build("b0")) == 2
    assert cache.get(module, "a", 2, lambda: build("a2")) == 3  # its own key changed
    assert cache.peek("b") == 2 and len(cache) == 2
    with torch.no_grad():
        module.weight.add_(1.0)  # in place: the version counter
    assert cache.peek("b") == 2  # peek does not check
    assert cache.get(module, "a", 2, lambda: build("a2'")) == 4
    assert cache.peek("b") is None  # everything derived went with the old tensors
    module.double()  # converted: new tensors
    assert cache.get(module, "a", 2, lambda: build("a2''")) == 5
    cache.clear()
    assert len(cache) == 0 and cache.peek("a") is None


def test_copies_and_pickles_start_empty():
    module = nn.Linear(3, 2)
    cache = DerivedCache()
    cache.get(module, "a", None, lambda: object())
    assert len(copy.deepcopy(cache)) == 0
    assert len(pickle.loads(pickle.dumps(cache))) == 0
