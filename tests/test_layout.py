"""The layout of the code: the method's files at the top, the rest in folders named for their job, and imports that run
one way. No circle of imports, between files or between rooms (a folder counts as one room); the method never imports
the scaffolding; train.py and the files below it never reach the extras beyond the paper (explain, report, your own
videos); plumbing imports nothing of the method. Every import counts, at the top of a file or inside a function: a lazy
import is an import all the same."""

import ast
import glob
import os

from conftest import ROOT

# The method at the top, in the order a reader meets it; demo.py, the scaffolding's front door, beside it.
TOP = {"train", "predict", "cv", "model", "data", "prompt", "frames"}
FOLDERS = {"qwen_vl", "scoring", "plumbing", "scaffold"}
SCAFFOLDING = {"scaffold", "demo"}
EXTRAS = {"scoring.explain", "scoring.report", "scoring.videos"}  # beyond the paper: what predict.py offers besides
# What training, the model, the data, the prompt and the frames are made of: none of them reaches the extras.
CORE = {"train", "model", "data", "prompt", "frames"}


def modules(root=ROOT):
    """{dotted module name: path} of the project's files: the top level's and those of its folders."""
    paths = glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "*", "*.py"))
    found = {}
    for path in paths:
        rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        if rel.split(".")[0] in ("tests", ".venv") or rel.endswith("__init__"):
            continue
        found[rel] = path
    return found


def project_imports(root=ROOT):
    """{module: the set of the project's modules it imports}: `import a.b`, `from a import b` (a module b of a, or a
    itself) and `from a.b import c` each name the module they reach."""
    known = modules(root)
    packages = {m.split(".")[0] for m in known if "." in m}
    graph = {}
    for name, path in known.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        found = set()
        for node in ast.walk(tree):  # every node: imports inside functions and branches count
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                          for alias in node.names}
        graph[name] = {m for m in found if m in known or m in packages} - {name}
    return graph


def room(module):
    """The room a module stands in: its folder, or itself at the top."""
    return module.split(".")[0]


def rooms(graph):
    """The imports between rooms."""
    out = {}
    for m, imported in graph.items():
        out.setdefault(room(m), set()).update(room(i) for i in imported if room(i) != room(m))
    return out


def find_cycle(graph):
    """A circle of imports, as the modules along it with the first again at the end; None if there is none."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
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


def reach(graph, start):
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def wrong_imports(graph):
    """Each import against the layout, as "a imports b (why)"."""
    wrong = []
    for m, imported in graph.items():
        for i in imported:
            if room(i) in SCAFFOLDING and room(m) not in SCAFFOLDING:
                wrong.append(f"{m} imports {i} (the method never imports the scaffolding)")
            if room(m) == "plumbing" and room(i) != "plumbing":
                wrong.append(f"{m} imports {i} (plumbing stands on nothing of the method)")
    for m in sorted(CORE & set(graph)):
        wrong += [f"{m} reaches {e} (an extra beyond the paper)" for e in sorted(reach(graph, m) & EXTRAS)]
    return sorted(wrong)


def test_the_top_holds_the_method_and_folders_the_rest():
    top = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    assert top == TOP | {"demo"}, f"top-level files beyond the design's: {sorted(top - TOP - {'demo'})}"
    folders = {d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "__init__.py"))}
    assert folders == FOLDERS, folders


def test_no_circle_of_imports():
    graph = project_imports()
    circle = find_cycle(graph)
    assert circle is None, "a circle of imports: " + " -> ".join(circle)
    circle = find_cycle(rooms(graph))
    assert circle is None, "a circle of rooms: " + " -> ".join(circle)


def test_imports_run_one_way():
    graph = project_imports()
    assert "scoring.decode" in graph["train"] and "scoring.explain" in reach(graph, "predict")  # the checks see both
    wrong = wrong_imports(graph)
    assert not wrong, "; ".join(wrong)


def test_the_checks_see_lazy_imports(tmp_path):
    """The checks on a made-up project whose only imports sit inside functions: a circle, an import of the
    scaffolding, an extra reached through another file, plumbing that imports the method."""
    files = {"data.py": "def main():\n    import model\n", "model.py": "def make():\n    from data import Video\n",
             "train.py": "def demo():\n    if True:\n        from scaffold import tiny\n",
             "frames.py": "def f():\n    from scoring.decode import greedy\n",
             "scoring/decode.py": "def g():\n    import scoring.explain\n", "scoring/explain.py": "",
             "plumbing/files.py": "def h():\n    import frames\n", "scaffold/tiny.py": "import model\n"}
    for name, text in files.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text(text)
    for folder in ("scoring", "plumbing", "scaffold"):
        (tmp_path / folder / "__init__.py").write_text("")
    graph = project_imports(str(tmp_path))
    assert graph == {"data": {"model"}, "model": {"data"}, "train": {"scaffold.tiny"}, "frames": {"scoring.decode"},
                     "scoring.decode": {"scoring.explain"}, "scoring.explain": set(), "plumbing.files": {"frames"},
                     "scaffold.tiny": {"model"}}
    assert find_cycle(graph) == ["data", "model", "data"]
    assert find_cycle(rooms(graph)) == ["data", "model", "data"]
    assert find_cycle(rooms(dict(graph, model=set()))) is None
    assert wrong_imports(graph) == ["frames reaches scoring.explain (an extra beyond the paper)",
                                    "plumbing.files imports frames (plumbing stands on nothing of the method)",
                                    "train imports scaffold.tiny (the method never imports the scaffolding)"]
