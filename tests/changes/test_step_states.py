"""The step run's lifecycle table, tested without a database."""
from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from changes.step_states import StepEvent, StepStatus, StepTransitionNotAllowed, step_next

ALLOWED = {
    ("pending", "start"): "running", ("running", "start"): "running",
    ("running", "pass"): "passed", ("running", "skip"): "skipped", ("running", "fail"): "failed",
    ("pending", "fail"): "failed", ("running", "rewind"): "pending",
    ("failed", "retry"): "pending", ("failed", "operator_skip"): "skipped",
    ("pending", "abort_skip"): "skipped", ("running", "abort_skip"): "skipped",
}


@pytest.mark.parametrize(("status", "event"), list(itertools.product(StepStatus.values, StepEvent.values)))
def test_step_transition_matrix(status: str, event: str) -> None:
    if (status, event) in ALLOWED:
        assert step_next(status, event) == ALLOWED[(status, event)]
    else:
        with pytest.raises(StepTransitionNotAllowed, match=f"'{status}' cannot take the event '{event}'"):
            step_next(status, event)


def test_passed_and_skipped_steps_never_move_again() -> None:
    for status, event in itertools.product(("passed", "skipped"), StepEvent.values):
        with pytest.raises(StepTransitionNotAllowed):
            step_next(status, event)


def test_no_module_assigns_a_step_status_outside_the_table() -> None:
    """The engine and the decision service set a step's status only with step_next(): no literal status is written
    to a StepRun (update() or an assignment) in the production code; a filter on a status is a read, and allowed."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("changes", "runner", "reports", "notifications"):
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update":
                    for kw in node.keywords:
                        if kw.arg == "status" and isinstance(kw.value, ast.Attribute) and "StepRun" in ast.unparse(
                                node.func) + ast.unparse(kw.value) and kw.value.attr.isupper():
                            offenders.append(f"{path.relative_to(root)}:{node.lineno}")
                if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Attribute) and t.attr == "status" and ast.unparse(t.value) in ("step", "row")
                        for t in node.targets) and isinstance(node.value, ast.Attribute | ast.Constant):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
