"""The layout of the code: the project's modules import one another without a circle, and the method's files never
import the scaffolding (synthetic data, tiny models, the demo, the benchmarks), which imports the method. Every import
counts, at the top of a file or inside a function: a lazy import is an import all the same."""

import ast
import glob
import os

from conftest import ROOT

# The method: what a reader audits against the paper. The scaffolding: what runs the method on synthetic data and tiny
# models, and measures it. Every top-level .py file is one or the other.
METHOD = {"errors", "prompt", "scoring", "sources", "data", "frames", "model", "qwen_vl", "qwen_vl_processor", "verify",
          "train", "checkpoint", "distributed", "predict", "explain", "report", "folder", "cv", "search"}
SCAFFOLDING = {"synthetic", "tiny", "demo", "bench", "wheels"}


def project_imports(root=ROOT):
    """{module: the set of the project's modules it imports} for every top-level .py file under `root`."""
    paths = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(root, "*.py"))}
    graph = {}
    for name, path in paths.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        found = set()
        for node in ast.walk(tree):  # every node: imports inside functions and branches count
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
        graph[name] = (found & paths.keys()) - {name}
    return graph


def find_cycle(graph):
    """A circle of imports, as the modules along it with the first again at the end; None if there is none."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            circle = visit(imported)
            if circle:
                return circle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module)
        if circle:
            return circle
    return None


def scaffolding_imports(graph):
    """Each import of the scaffolding by a file of the method, as "a.py imports b.py"."""
    return sorted(f"{m}.py imports {s}.py" for m in graph if m in METHOD for s in graph[m] & SCAFFOLDING)


def test_no_circle_of_imports():
    circle = find_cycle(project_imports())
    assert circle is None, "a circle of imports: " + " -> ".join(f"{m}.py" for m in circle)


def test_the_method_never_imports_the_scaffolding():
    graph = project_imports()
    unplaced = sorted(set(graph) - METHOD - SCAFFOLDING)
    assert not unplaced, f"{', '.join(m + '.py' for m in unplaced)}: add it to METHOD or SCAFFOLDING in this test"
    wrong = scaffolding_imports(graph)
    assert not wrong, "the method imports the scaffolding: " + "; ".join(wrong)


def test_the_checks_see_lazy_imports(tmp_path):
    """Both checks on a made-up project whose only imports sit inside functions: a circle and a forbidden import."""
    files = {"data.py": "def main():\n    import model\n", "model.py": "def make():\n    from data import Video\n",
             "tiny.py": "import model\n", "train.py": "def demo():\n    if True:\n        import tiny.sub\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = project_imports(str(tmp_path))
    assert graph == {"data": {"model"}, "model": {"data"}, "tiny": {"model"}, "train": {"tiny"}}
    assert find_cycle(graph) == ["data", "model", "data"]
    assert scaffolding_imports(graph) == ["train.py imports tiny.py"]
    assert find_cycle(dict(graph, model=set())) is None and scaffolding_imports(dict(graph, train=set())) == []
