"""Checks that turn a silent wrong number into a clear error: values that are not finite.

Kept apart from the pipeline (``convert.py``) so that each check is one call there. Every error
names the problem and the fix on one line (``signgd.errors``).
"""
from __future__ import annotations

import torch
import torch.fx as fx

from .errors import CalibrationError

__all__ = ["first_nonfinite", "check_finite_output"]


class _FiniteProbe(fx.Interpreter):
    """Runs a graph and stops at the first node whose output holds NaN or Inf."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.extra_traceback = False
        self.found: fx.Node | None = None

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if self.found is None and isinstance(out, torch.Tensor) and out.is_floating_point() \
                and not torch.isfinite(out).all():
            self.found = n
            raise _Stop
        return out


class _Stop(Exception):
    pass


def describe_node(gm: fx.GraphModule, n: fx.Node) -> str:
    """``'name' (what it computes)`` for an error message."""
    if n.op == "call_module":
        what = f"module {n.target} ({type(gm.get_submodule(n.target)).__name__})"
    elif n.op == "call_function":
        what = getattr(n.target, "__name__", str(n.target))
    elif n.op == "call_method":
        what = f".{n.target}()"
    else:
        what = n.op
    return f"{n.name!r} ({what})"


def first_nonfinite(gm: fx.GraphModule, x: torch.Tensor) -> fx.Node | None:
    """The first node (in graph order) whose value on ``x`` holds NaN or Inf; None when all are finite."""
    probe = _FiniteProbe(gm)
    try:
        with torch.no_grad():
            probe.run(x.clone())
    except _Stop:
        pass
    return probe.found


def check_finite_output(gm: fx.GraphModule, x: torch.Tensor, out: torch.Tensor, what: str) -> None:
    """Raise CalibrationError when ``out`` (``gm`` run on ``x``) holds NaN or Inf, naming where the
    first non-finite value appears in the graph."""
    if not out.is_floating_point() or bool(torch.isfinite(out).all()):
        return
    node = first_nonfinite(gm, x)
    where = f"; the first one appears at node {describe_node(gm, node)}" if node is not None else ""
    raise CalibrationError(
        f"{what} gives NaN or Inf on the calibration data{where}. Fix the model (weights, an overflowing "
        f"op such as exp of large values, a division by zero) or scale the inputs as the model was trained: "
        f"a network is converted only where its ANN is finite")
