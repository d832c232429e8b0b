"""No import cycles among the project's modules: every import statement of ``inference`` and ``pyro_vae``, those
inside functions too, read from the source (a cycle hidden in a function still ties two modules together)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
PACKAGES = ("inference", "pyro_vae")


def project_modules() -> dict:
    """``{dotted name: path}`` of every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    name = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                    modules[name.removesuffix(".__init__")] = path
    return modules


def imported_names(tree: ast.AST, module: str, is_package: bool):
    """The dotted names each import statement of a module reaches (``from a import b`` gives ``a`` and ``a.b``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package upwards
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict:
    """``{module: modules it imports}``, each name resolved to the longest project module it starts with; a
    module importing its own package (its ``__init__``) does not count."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        targets = set()
        for name in imported_names(tree, module, path.endswith("__init__.py")):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_project_imports_itself_through_others():
    graph = import_graph()
    assert len(graph) > 50 and "pyro_vae.data.user" in graph["pyro_vae.data.datasets"]
    assert cycles(graph) == []


_BELOW_RUNS = {
    "inference",
    "pyro_vae.components",
    "pyro_vae.data",
    "pyro_vae.folder",
    "pyro_vae.config",
    "pyro_vae.vae",
}
#: What each part of the project may import besides itself: the table of ARCHITECTURE.md.
MAY_IMPORT = {
    "inference": set(),
    "pyro_vae.components": {"inference"},
    "pyro_vae.data": {"inference"},
    "pyro_vae.folder": {"inference"},
    "pyro_vae.config": {"inference", "pyro_vae.components", "pyro_vae.data"},
    "pyro_vae.vae": {"inference", "pyro_vae.components", "pyro_vae.config"},
    "pyro_vae.runs": _BELOW_RUNS,
    "pyro_vae.compare": _BELOW_RUNS | {"pyro_vae.runs"},
    "pyro_vae.search": _BELOW_RUNS | {"pyro_vae.runs"},
    "pyro_vae.bandit": _BELOW_RUNS | {"pyro_vae.runs"},
    "pyro_vae.cli": _BELOW_RUNS | {"pyro_vae.runs", "pyro_vae.compare", "pyro_vae.search", "pyro_vae.bandit"},
}


def part_of(module: str) -> str:
    """The part of :data:`MAY_IMPORT` a module belongs to (``pyro_vae`` itself, which imports lazily, is its own)."""
    parts = module.split(".")
    return "inference" if parts[0] == "inference" else ".".join(parts[:2])


def test_each_part_imports_only_the_parts_below_it():
    graph = import_graph()
    assert {part_of(module) for module in graph} == set(MAY_IMPORT) | {"pyro_vae"}  # a new part needs a row
    for module, targets in graph.items():
        allowed = MAY_IMPORT.get(part_of(module), set()) | {part_of(module)}
        assert {part_of(target) for target in targets} <= allowed, module


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
