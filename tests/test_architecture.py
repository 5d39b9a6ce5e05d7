"""The plan of the house, checked from the code's own imports: no cycles, imports go down the
layers only, the core imports neither scikit-learn nor the application, no private name is used
outside its module, and importing the package or asking the CLI for help stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_logreg"

#: the layers, lowest first: a module may import modules of its own layer or of lower ones
LAYERS = [
    {"errors", "arguments", "devices", "validation", "functional", "registry", "penalty", "folds", "memory",
     "loss_scaling"},
    {"layers", "models", "gradients", "init", "schedules", "optimizers"},
    {"steps"},
    {"train", "stopping", "streaming", "distributed"},
    {"solvers"},
    {"inference", "path"},
    {"estimators"},
    {"app"},
    {"", "__main__"},  # the package root (lazy names) and python -m torch_logreg
]
#: the modules of the inference package, lowest first: each imports only those before it
INFERENCE = ["stats", "tables", "fitdata", "diagnostics", "covariance", "constraints", "constraint_strings", "margins",
             "prediction", "profile", "residuals", "results"]
#: the core: maths to models and the references; also the steps, the loop and the solvers
LIBRARY = set().union(*LAYERS[:6])
#: third-party packages the library must not import (the app and the scikit-learn wing may)
NOT_IN_LIBRARY = {"sklearn", "pandas", "tensorboard", "tqdm"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def import_graph(root: Path = PACKAGE):
    """``{module: {imported package module: line}}`` and ``{module: {third-party top name: line}}``,
    every import statement counted (inside functions too), and the private names each module
    takes from another (``from .x import _y``, ``x._y``)."""
    edges, external, private = {}, {}, []
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if mod else []
        package = base if is_pkg else base[:-1]
        edges[mod], external[mod] = {}, {}
        imported_modules = set()  # local names bound to package modules, for x._y
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    target = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
                    target_name = ".".join(target)
                    for alias in node.names:
                        sub = f"{target_name}.{alias.name}".lstrip(".")
                        if sub in modules:
                            edges[mod][sub] = node.lineno
                            imported_modules.add(alias.asname or alias.name)
                        else:
                            edges[mod][target_name] = node.lineno
                            if alias.name.startswith("_"):
                                private.append((mod, f"{target_name}.{alias.name}", node.lineno))
                elif node.module.split(".")[0] == "torch_logreg":
                    edges[mod][node.module.removeprefix("torch_logreg").lstrip(".")] = node.lineno
                elif node.module != "__future__":
                    external[mod][node.module.split(".")[0]] = node.lineno
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "torch_logreg":
                        edges[mod][alias.name.removeprefix("torch_logreg").lstrip(".")] = node.lineno
                    else:
                        external[mod][alias.name.split(".")[0]] = node.lineno
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                private.append((mod, f"{node.value.id}.{node.attr}", node.lineno))
    return edges, external, private


def find_cycle(edges) -> list[str] | None:
    """One import cycle as a list of modules, or None (a package's ``__init__`` is a module of its
    own: importing the package runs it)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in edges.get(m, {}):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if state.get(n) is None:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if state.get(m) is None:
            found = visit(m)
            if found:
                return found
    return None


GRAPH = import_graph()


def test_the_graph_is_read():
    edges, external, _ = GRAPH
    assert {"train", "steps.select", "solvers.newton", "app.cli", "estimators.estimator"} <= set(edges)
    assert "steps.select" in edges["train"] or "steps" in edges["train"]
    assert "sklearn" in external["estimators.estimator"]


def test_no_import_cycles():
    edges, _, _ = GRAPH
    assert find_cycle(edges) is None


def test_imports_go_down_the_layers():
    edges, _, _ = GRAPH
    upward = [f"{m} (layer {layer_of(m)}) imports {n} (layer {layer_of(n)}) at line {line}"
              for m, targets in edges.items() for n, line in targets.items() if layer_of(n) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_the_inference_package_imports_one_way():
    edges, _, _ = GRAPH
    rank = {f"inference.{m}": i for i, m in enumerate(INFERENCE)}
    assert {m for m in edges if m.split(".")[0] == "inference"} == {"inference", *rank}
    backward = [f"{m} imports {n} at line {line}" for m in rank for n, line in edges[m].items()
                if n.split(".")[0] == "inference" and not rank.get(n, len(rank)) < rank[m]]
    assert not backward, "\n".join(backward)


def test_the_library_imports_neither_sklearn_nor_the_app():
    edges, external, _ = GRAPH
    library = [m for m in edges if m.split(".")[0] in LIBRARY]
    bad = [f"{m} imports {x} at line {line}" for m in library for x, line in external[m].items() if x in NOT_IN_LIBRARY]
    bad += [f"{m} imports {n}" for m in library for n in edges[m] if n.split(".")[0] in ("app", "estimators")]
    assert not bad, "\n".join(bad)


def test_no_private_name_is_used_outside_its_module():
    _, _, private = GRAPH
    assert not private, "\n".join(f"{m} uses {name} at line {line}" for m, name, line in private)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The checks above fail on a cycle, an upward import and a private name (a scratch package)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text("from .solvers import fit\nfrom . import models\nx = models._hidden\n")
    (pkg / "solvers.py").write_text("from .train import loop\n")
    (pkg / "models.py").write_text("_hidden = 1\n")
    edges, _, private = import_graph(pkg)
    assert find_cycle(edges) in (["solvers", "train", "solvers"], ["train", "solvers", "train"])
    assert layer_of("solvers") > layer_of("train") and "solvers" in edges["train"]  # an upward edge
    assert ("train", "models._hidden", 3) in private


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


HEAVY = ("torch", "sklearn", "scipy", "pandas", "numba", "torch.distributed", "tensorboard")


def test_importing_the_package_is_light():
    loaded = _run(f"import sys, torch_logreg; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert loaded == "[]"


@pytest.mark.e2e
def test_the_core_names_load_no_sklearn_scipy_or_pandas():
    code = ("import sys, torch_logreg as tl\n"
            "tl.fit, tl.fit_exact, tl.LogisticRegression, tl.SoftmaxRegression, tl.MLP, tl.check_gradients, tl.Trainer\n"
            "print([m for m in ('sklearn', 'scipy', 'pandas', 'tensorboard') if m in sys.modules])")
    assert _run(code) == "[]"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["resume", "--help"], ["evaluate", "--help"],
                                  ["predict", "--help"], ["gradcheck", "--help"], ["cv", "--help"]])
def test_help_does_not_import_torch(args):
    code = ("import contextlib, io, sys\n"
            "from torch_logreg.app.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            f"    main({args!r})\n"
            "assert 'usage: torch-logreg' in out.getvalue(), out.getvalue()\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert _run(code) == "[]"
