"""The package's layering, read from its source: the library never imports the console
commands (``nq_plugin/cli`` sits on top), and no two modules import each other, directly or
through others (imports inside functions count: they are a dependency all the same)."""
import ast
import os
from typing import Dict, List, Set

from tests.fairseq_utils import ROOT

PACKAGE = ROOT / "nq_plugin"


def _module_name(path) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def modules() -> Dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                found[_module_name(path)] = path
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Each module of nq_plugin -> the modules of nq_plugin it imports (``from pkg import
    name`` counts as ``pkg.name`` where that is a module, else as ``pkg``)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    edges.add(sub if sub in mods else target)
        graph[name] = {e for e in edges if e in mods and e != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "nq_plugin.packed.export" in graph["nq_plugin.cli.pack"]
    assert "nq_plugin.models.loading" in graph["nq_plugin.packed.export"]  # a lazy import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_console_commands():
    offenders = {m: sorted(e for e in edges if e.startswith("nq_plugin.cli"))
                 for m, edges in import_graph().items() if not m.startswith("nq_plugin.cli")}
    assert {m: e for m, e in offenders.items() if e} == {}


def test_only_the_backend_and_the_console_commands_read_the_environment():
    """Execution choices and paths come from nq_plugin/backend.py (read once, settable in
    code); no other module of the library reads os.environ."""
    readers = set()
    for name, path in modules().items():
        if name == "nq_plugin.backend" or name.startswith("nq_plugin.cli"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
                readers.add(name)
            if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                    any(a.name in ("environ", "getenv") for a in node.names):
                readers.add(name)
    assert readers == set()


def test_every_environment_variable_read_is_documented():
    """Each variable nq_plugin/backend.py reads is in its ENVIRONMENT table and on the
    environment page of docs/."""
    import re
    from nq_plugin.backend import ENVIRONMENT
    source = (PACKAGE / "backend.py").read_text()
    read = set(re.findall(r'"(NQ_[A-Z_]+)"', source)) | {"WORLD_SIZE", "RANK"}
    listed = {v.strip() for e in ENVIRONMENT for v in e.name.split(",")}
    assert read <= listed, read - listed
    page = (ROOT / "docs" / "environment.md").read_text()
    assert all(name in page for name in listed), [n for n in listed if n not in page]


def test_one_cache_of_derived_state():
    """What modules derive from their tensors and keep is kept by nq_plugin/derived.py alone:
    no module defines its own key of tensor versions."""
    owners = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Attribute) and node.attr in ("_version", "data_ptr") and \
                    name != "nq_plugin.derived":
                owners.add(name)
    assert owners == set()
