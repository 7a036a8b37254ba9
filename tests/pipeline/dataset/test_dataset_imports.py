"""pipeline.dataset is the on-disk format: it imports nothing else from pipeline/, and its modules form no import
cycle, counting the imports inside functions too."""
import ast
import pathlib

import pipeline.dataset

PACKAGE = pathlib.Path(pipeline.dataset.__file__).parent


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from pipeline.dataset import layout` imports the module pipeline.dataset.layout
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def dataset_graph() -> dict[str, set[str]]:
    modules = {f"pipeline.dataset.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imported_modules(path) if m in modules} for name, path in modules.items()}


def test_dataset_imports_nothing_else_from_pipeline():
    for path in PACKAGE.glob("*.py"):
        outside = {m for m in imported_modules(path)
                   if m.split(".")[0] == "pipeline" and not m.startswith("pipeline.dataset")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_dataset_modules_form_no_import_cycle():
    graph = dataset_graph()
    assert {"pipeline.dataset.layout", "pipeline.dataset.verify", "pipeline.dataset.readers"} <= set(graph)
    done, stack = set(), []

    def visit(module):
        assert module not in stack, "import cycle: " + " -> ".join(stack[stack.index(module):] + [module])
        if module not in done:
            stack.append(module)
            for dep in sorted(graph[module]):
                visit(dep)
            stack.pop()
            done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_cycle_check_sees_lazy_imports():
    # readers imports verify inside a function; the graph must still hold that edge
    assert "pipeline.dataset.verify" in dataset_graph()["pipeline.dataset.readers"]
