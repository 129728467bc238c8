"""The product's boundaries: the simulator is a source system, and Airflow is reached only through its adapter.

Checked two ways: statically (every import statement in the package, including those inside functions) and
at run time (importing every module in a fresh interpreter loads neither the simulator nor Airflow).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sunat_pipeline"
ADAPTER = "sunat_pipeline.orchestration"  # the DAG adapter: the one place allowed to import Airflow


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import name": name may be a module of pkg; the cycle check keeps what exists.
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_every_stage_is_a_documented_package():
    for d in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")):
        init = d / "__init__.py"
        assert init.exists(), f"{d.name} is not a package"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{d.name}/__init__.py opens with no docstring"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_product_module_imports_the_simulator(path):
    bad = {m for m in _imports(path) if m == "sunat_sim" or m.startswith("sunat_sim.")}
    assert not bad, f"{path.relative_to(ROOT)} imports the simulator: {bad}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_adapter_imports_airflow(path):
    if _module_name(path).startswith(ADAPTER):
        return
    bad = {m for m in _imports(path) if m == "airflow" or m.startswith("airflow.")}
    assert not bad, f"{path.relative_to(ROOT)} imports Airflow outside {ADAPTER}: {bad}"


def test_importing_the_whole_product_loads_neither_simulator_nor_airflow():
    mods = [m for m in MODULES if not m.startswith(ADAPTER)]
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert "sunat_sim" not in loaded
    assert "airflow" not in loaded


def test_no_import_cycles_between_product_modules():
    graph = {m: set() for m in MODULES}
    for p in PACKAGE.rglob("*.py"):
        me = _module_name(p)
        for imp in _imports(p):
            # "from pkg import mod" names a module too: keep the longest known prefix.
            for cand in (imp, *(imp.rsplit(".", k)[0] for k in range(1, imp.count(".") + 1))):
                if cand in graph and cand != me and not me.startswith(cand + "."):
                    graph[me].add(cand)
                    break
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
