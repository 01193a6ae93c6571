"""The simulator's modules import one way (model -> registry -> cmdlets_* -> binding, call): every import sits at
the top of its module, the cmdlet handlers never import the model, and any module can be imported first.

The one exception is an optional dependency imported where it is needed, said so with ``# noqa: PLC0415`` and a
reason (exchange_sim/kerberos.py: gssapi, needed only by endpoints serving Kerberos)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exchange_sim"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


@pytest.mark.parametrize("name", MODULES)
def test_every_import_is_at_the_top_of_the_module(name: str) -> None:
    lines = (PACKAGE / f"{name}.py").read_text(encoding="utf-8").splitlines()
    tree = _tree(name)
    top = {id(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}
    top |= {id(inner) for node in tree.body if _is_type_checking_block(node) for inner in node.body}
    nested = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top
              and "noqa: PLC0415" not in lines[node.lineno - 1]]
    assert nested == [], f"exchange_sim/{name}.py imports inside a function or class at lines {nested}"


@pytest.mark.parametrize("name", [m for m in MODULES if m.startswith("cmdlets_") or m in ("binding", "call")])
def test_the_cmdlet_handlers_and_the_binding_never_import_the_model(name: str) -> None:
    imported = {node.module for node in ast.walk(_tree(name)) if isinstance(node, ast.ImportFrom)}
    assert "model" not in imported and "exchange_sim.model" not in imported


@pytest.mark.parametrize("name", ["call", "binding", "cmdlets_exchange", "registry", "model", "session"])
def test_any_module_can_be_imported_first(name: str) -> None:
    # A fresh interpreter: an import cycle shows up as an ImportError for whichever module comes first.
    code = f"import exchange_sim.{name}, exchange_sim.model as m; assert len(m.REGISTRY) > 20"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent, timeout=60)  # noqa: S603
