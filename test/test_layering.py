"""The shape of the code: the runtime knows nothing of the lab, ROS stays in `ros/`, SAN stands
alone, and nothing imports in a circle.

Static checks over the source (ast), so they also hold for code paths no test runs. Every
import counts, at module level or inside a function; one under `if TYPE_CHECKING:` counts
for cycles (a reader still has to hold the circle in mind) but not as a run-time dependency.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("povss_ros", "povss_lab")
# Where the ROS client library and message packages may be imported in the runtime.
ROS_MODULES = {
    "rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "geometry_msgs",
    "visualization_msgs", "builtin_interfaces", "lifecycle_msgs", "povss_interfaces",
}
# requirements.txt names -> the module each installs.
IMPORT_NAMES = {
    "torch": "torch", "torchvision": "torchvision", "open_clip_torch": "open_clip",
    "numpy": "numpy", "opencv-python-headless": "cv2", "safetensors": "safetensors",
    "scipy": "scipy", "pillow": "PIL", "rosbags": "rosbags", "starlette": "starlette",
    "uvicorn": "uvicorn",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


SOURCES = _sources()


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test)


def _imports(module: str, type_checking: bool = False) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import of `module`, resolved; with
    `type_checking`, those under `if TYPE_CHECKING:` too."""
    path = SOURCES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child) and not type_checking:
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                for alias in child.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in SOURCES else target, top))
            visit(child, inner)

    visit(tree, True)
    return found


def _project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, TYPE_CHECKING imports included."""
    return {m: {i for i, _ in _imports(m, type_checking=True) if i.split(".")[0] in PACKAGES}
            for m in SOURCES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _unit(module: str) -> str:
    """The layer a module belongs to: a subpackage (povss_ros.san, povss_lab.eval...) or,
    for a top-level module, the module itself."""
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def test_the_runtime_never_imports_the_lab():
    bad = [(m, i) for m in SOURCES if m.startswith("povss_ros")
           for i, _ in _imports(m) if i.split(".")[0] == "povss_lab"]
    assert bad == []


def test_rclpy_and_ros_messages_only_under_ros():
    bad = [(m, i) for m in SOURCES if m.startswith("povss_ros") and not m.startswith(
        "povss_ros.ros") for i, _ in _imports(m) if i.split(".")[0] in ROS_MODULES]
    assert bad == []


def test_san_imports_nothing_else_of_the_project():
    bad = [(m, i) for m in SOURCES if m.startswith("povss_ros.san")
           for i, _ in _imports(m) if i.split(".")[0] in PACKAGES
           and not i.startswith("povss_ros.san")]
    assert bad == []


def test_no_import_cycles_between_modules():
    assert _cycles(_project_graph()) == []


def test_no_import_cycles_between_layers():
    """e.g. eval must not import training while training imports eval."""
    graph: dict[str, set[str]] = {}
    for module, targets in _project_graph().items():
        here = _unit(module)
        graph.setdefault(here, set()).update(_unit(t) for t in targets if _unit(t) != here)
    assert _cycles(graph) == []


def _runtime_dependencies() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = line.split("==")[0].split(">=")[0].split("[")[0].strip()
            assert name in IMPORT_NAMES, f"add {name!r}'s module name to IMPORT_NAMES"
            names.add(IMPORT_NAMES[name])
    return names


def test_runtime_modules_import_only_declared_dependencies_at_module_level():
    """No plotting or progress-bar library (or anything undeclared) loads with the runtime."""
    allowed = _runtime_dependencies() | set(sys.stdlib_module_names) | {"povss_ros"}
    bad = []
    for module in (m for m in SOURCES if m.startswith("povss_ros")):
        extra = ROS_MODULES if module.startswith("povss_ros.ros") else set()
        bad += [(module, i) for i, top in _imports(module)
                if top and i.split(".")[0] not in allowed | extra]
    assert bad == []


def test_the_checks_see_the_imports_they_police():
    """The scanner itself: relative imports resolve, lazy imports count, cycles are found."""
    imports = dict(_imports("povss_ros.segmenter"))
    assert "povss_ros.personal.fusion" in imports and imports["povss_ros.personal.fusion"]
    lazy = dict(_imports("povss_ros.cli"))
    assert lazy.get("povss_ros.segmenter") is False  # imported inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _unit("povss_lab.eval.datasets.fss") == "povss_lab.eval"
    assert _unit("povss_ros.segmenter") == "povss_ros.segmenter"
