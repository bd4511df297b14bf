"""The package's layers, enforced: no module imports one of a higher layer, and no import circle.

Every import counts, at the top of a module or inside a function: a lazy
import is still a dependency. From the top:

1. commands: the absl mains, which compose the rest;
2. runs: training, the report, sweeps (none imports another's module upward);
3. tasks: export, prediction, evaluation, analysis;
4. model and data: data, models (with their compile recipe), losses, optim,
   and the run folder, checkpoints and figures they write;
5. base: contract, errors, the light config and the commands' helpers (cli).

Within the runs layer, the report package (a few small files) and sweep.py import
neither the other (the commands compose them), and the report draws without pyplot.
"""

import ast
import pathlib

import pytest

from helpers import ROOT

pytestmark = pytest.mark.backend_agnostic

PACKAGE = "dcl_keras"
LAYERS = (
    ("commands", ("commands",)),
    ("runs", ("training", "report", "sweep", "experiments", "pretraining", "audit")),
    ("tasks", ("export", "export_formats", "predict", "gallery", "evaluation", "analysis", "label_audit")),
    (
        "model and data",
        ("data", "models", "losses", "optim", "saving", "workdir", "checkpointing", "preemption", "distribute", "viz"),
    ),
    ("base", ("contract", "errors", "config", "cli", "")),  # "": the package's own __init__ (its version).
)


def module_files(root, package=PACKAGE):
    """{dotted module name: its file} of every module of the package under `root`."""
    modules = {}
    for path in sorted(pathlib.Path(root, package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(root, package=PACKAGE):
    """{module: {imported module of the package: first line importing it}}, lazy imports included."""
    modules = module_files(root, package)

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target == package or target.startswith(package + "."):
                    imported = resolve(target)
                    if imported and imported != module:
                        edges.setdefault(imported, node.lineno)
    return graph


def layer_of(module, layers=LAYERS, package=PACKAGE):
    """The index of the module's layer (0 is the top): its longest listed prefix; None when it is in none."""
    name = module.removeprefix(package).removeprefix(".")
    best = None
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + ".") or prefix == "" == name:
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph, layers=LAYERS, package=PACKAGE):
    """'a:line imports b (layer x above y)' for each import of a higher layer; a module in no layer is one too."""
    found = []
    for module, edges in sorted(graph.items()):
        own = layer_of(module, layers, package)
        if own is None:
            found.append(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
            continue
        for imported, line in sorted(edges.items()):
            theirs = layer_of(imported, layers, package)
            if theirs is not None and theirs < own:
                found.append(
                    f"{module}:{line} imports {imported} (layer {layers[theirs][0]!r} is above {layers[own][0]!r})"
                )
    return found


def circles(graph):
    """Each import circle as a list of modules (the strongly connected components of the graph with a cycle)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):  # Tarjan's algorithm.
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.get(module, {}):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_a_higher_layer():
    graph = import_graph(ROOT)
    assert "dcl_keras.training" in graph and "dcl_keras.commands.train" in graph
    assert upward_imports(graph) == []


def test_the_package_has_no_import_circle():
    assert circles(import_graph(ROOT)) == []


def test_the_check_finds_an_upward_import_a_circle_and_an_unlisted_module(tmp_path):
    files = {
        "__init__.py": "",
        "errors.py": "def f():\n    from dcl_keras import training  # A lazy upward import.\n",
        "training.py": "from dcl_keras.data import pipeline\n",
        "data/__init__.py": "",
        "data/pipeline.py": "import dcl_keras.data.records\n",
        "data/records.py": "from dcl_keras.data import pipeline\n",  # A circle within one layer.
        "scratch.py": "",
    }
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(tmp_path)
    assert graph["dcl_keras.training"] == {"dcl_keras.data.pipeline": 1}
    assert upward_imports(graph) == [
        "dcl_keras.errors:2 imports dcl_keras.training (layer 'runs' is above 'base')",
        "dcl_keras.scratch is in no layer of tests/test_layers.py: add it to LAYERS",
    ]
    assert circles(graph) == [["dcl_keras.data.pipeline", "dcl_keras.data.records"]]


@pytest.mark.backend_agnostic
def test_the_report_package_is_pages_plots_and_no_sweep_runner():
    """page.py (HTML), plots.py (matplotlib Figures, no pyplot), run_page.py, sweep_page.py, audit_page.py; small."""
    folder = pathlib.Path(ROOT, "dcl_keras", "report")
    assert sorted(p.name for p in folder.glob("*.py")) == [
        "__init__.py",
        "audit_page.py",
        "page.py",
        "plots.py",
        "run_page.py",
        "sweep_page.py",
    ]
    for path in [*folder.glob("*.py"), pathlib.Path(ROOT, "dcl_keras", "sweep.py")]:
        source = path.read_text()
        assert len(source.splitlines()) < 500, path
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name}"
        imported = {
            alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        other = "dcl_keras.report" if path.name == "sweep.py" else "dcl_keras.sweep"
        assert not [name for name in imported if name.startswith(other)], path  # The commands compose the two.
        assert not [name for name in imported if "pyplot" in name], path
