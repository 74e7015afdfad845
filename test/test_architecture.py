"""The layers' arrows: no import cycles, and each heavy library only where it belongs.

Every import counts, module level or inside a function: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {'vit_seg_node': ROOT / 'vit_seg_node',
           'vit_seg_train': ROOT / 'training' / 'vit_seg_train',
           'vit_seg_optimize': ROOT / 'training' / 'vit_seg_optimize'}
ROS = ('rclpy', 'rcl_interfaces', 'sensor_msgs', 'diagnostic_msgs', 'std_msgs')
# package -> the packages it may import (the arrows point down)
ALLOWED = {
    'vit_seg_node.core': {'vit_seg_node.core'},
    'vit_seg_node.backends': {'vit_seg_node.core', 'vit_seg_node.backends'},
    'vit_seg_node.pipeline': {'vit_seg_node.core', 'vit_seg_node.backends'},
    'vit_seg_node.ros': {'vit_seg_node.core', 'vit_seg_node.backends', 'vit_seg_node.pipeline',
                         'vit_seg_node.ros'},
    'vit_seg_node.eval': {'vit_seg_node.core', 'vit_seg_node.backends', 'vit_seg_node.pipeline',
                          'vit_seg_node.ros.convert', 'vit_seg_node.ros.spin', 'vit_seg_node.eval'},
    'vit_seg_node.cli': {'vit_seg_node'},
    'vit_seg_train': {'vit_seg_node.core', 'vit_seg_node.backends', 'vit_seg_node.cli',
                      'vit_seg_train'},
    'vit_seg_optimize': {'vit_seg_node.core', 'vit_seg_node.backends', 'vit_seg_node.cli',
                         'vit_seg_train', 'vit_seg_optimize'},
}


def module_name(pkg: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join([pkg, *parts])


def all_modules() -> dict[str, Path]:
    return {module_name(pkg, root, p): p for pkg, root in SOURCES.items()
            for p in root.rglob('*.py')}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Return every module ``path`` imports (internal ones resolved to the module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f'{node.module}.{a.name}' for a in node.names
                    if f'{node.module}.{a.name}' in modules}
    return out


def owner(module: str) -> str:
    """Return the ALLOWED key that governs ``module`` (longest prefix)."""
    keys = [k for k in ALLOWED if module == k or module.startswith(k + '.')]
    return max(keys, key=len)


def under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + '.') for p in prefixes)


@pytest.fixture(scope='module')
def graph():
    modules = all_modules()
    return {m: imports_of(p, set(modules)) for m, p in modules.items()}


def test_arrows_point_down(graph):
    internal = tuple(SOURCES)
    bad = [f'{m} imports {i}' for m, imps in graph.items() for i in imps
           if under(i, internal) and not under(i, ALLOWED[owner(m)])]
    assert not bad, bad


def test_no_import_cycles(graph):
    edges = {m: {i for i in imps if i in graph and i != m} for m, imps in graph.items()}
    # a package's __init__ importing its own submodules is no cycle of the design
    edges = {m: {i for i in e if not i.startswith(m + '.')} for m, e in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                raise AssertionError('import cycle: ' + ' -> '.join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2
    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_heavy_libraries_only_where_they_belong(graph):
    rules = [  # library, the modules allowed to import it
        (ROS, ('vit_seg_node.ros', 'vit_seg_node.eval')),
        (('torch', 'timm', 'torchvision'), ('vit_seg_train', 'vit_seg_optimize')),
        (('onnxruntime',), ('vit_seg_node.backends.onnxruntime_backend', 'vit_seg_optimize')),
        (('tensorrt', 'cuda'), ('vit_seg_node.backends.tensorrt_backend',)),
    ]
    bad = [f'{m} imports {i}' for libs, allowed in rules for m, imps in graph.items()
           for i in imps if under(i, libs) and not under(m, allowed)]
    assert not bad, bad


def test_the_checks_see_a_violation(tmp_path):
    """The graph reader finds lazy imports (so the tests above can fail)."""
    f = tmp_path / 'm.py'
    f.write_text('def f():\n    import rclpy\n    from vit_seg_train.train import train\n')
    assert {'rclpy', 'vit_seg_train.train'} <= imports_of(f, {'vit_seg_train.train'})
