"""Fused kernels for the simulator's hot loop: the signGD neuron scan.

One call advances a layer of signGD neurons by ``Tc`` steps. For ``t = 0 .. Tc-1``::

    g      = target[t]                          # or a target computed in the same pass (below)
    s      = y >= g                             # spike: "my estimate is too high" (ties fire)
    y      = s ? y - etas[t] : y + etas[t]      # one sign-gradient step
    out[t] = y * out_scale                      # or y when out_scale is None
    spikes[t] += number of true s               # only when a spikes tensor is given

Optionally the target is computed from the input in the same pass, so it is never written to
memory: ``pre="square"`` (``g = target[t] ** 2``, a square neuron), ``pre="mul"`` (``g = target[t] *
factor[t]``, LayerNorm's ``c * rsqrt(v)`` with one factor per row), and ``normalize=True``
(``g = g / out_scale``, a normalized neuron's target). These are torch's own operations in torch's
order, so the numbers are those of computing the target with torch first.

Backends (``signgd_scan(..., backend=...)``):

``"torch"``
    The reference (``reference.py``): plain torch element-wise ops, any device and dtype.
``"c"``
    A C function (``_csrc/signgd_scan.c``) compiled with the system C compiler on first use and
    loaded with ctypes (``c.py``); CPU float32/float64. OpenMP over blocks of elements, the loop
    over ``t`` inside, so ``target`` is read once and ``out`` written once. Uses
    ``torch.get_num_threads()`` threads. The library is cached in ``$SIGNGD_CACHE`` (default
    ``~/.cache/signgd/kernels``), keyed by a hash of the source, the compiler and its flags
    (``build.py``).
``"triton"``
    A Triton kernel (``triton.py``) for CUDA float32/float64 tensors: one program per block of
    elements, the loop over ``t`` inside.

``backend=None`` is auto: ``$SIGNGD_KERNEL`` (``torch``, ``c``, ``triton`` or ``auto``) when set,
otherwise "c" for CPU float32/float64, "triton" for CUDA float32/float64 when triton imports, and
"torch" for everything else. A backend named explicitly (argument or ``$SIGNGD_KERNEL``) that
cannot run raises :class:`KernelUnavailableError` saying why; only auto falls back (logging the
reason once on the ``signgd`` logger).

The "c" and "triton" backends do the torch reference's operations in the same order and in the
same precision (``eta`` and a scalar ``out_scale`` are rounded to the tensor's dtype first, as
torch does for a scalar operand), so their results are bit-identical to it.

``adaptive_scan`` is the same scan with per-neuron steps (``signgd.schedules.adaptive``), and
``sparse_scan`` the sparse neuron's (``dynamics="sparse"``: signed spikes, silent within a tolerance), each
on the C kernel where it can run and the torch loop elsewhere.
"""
from __future__ import annotations

import logging
import os

import torch

from ..errors import KernelUnavailableError
from . import c
from . import triton as triton_backend
from .build import cache_dir
from .reference import (
    adaptive_scan_torch,
    graded_step,
    next_step,
    overlap,
    pow2_step,
    prologue_torch,
    same_buffer,
    scan_torch,
    signgd_fire,
    signgd_update,
    sparse_fire,
    sparse_scan_torch,
    sparse_step,
)

__all__ = ["signgd_scan", "signgd_fire", "signgd_update", "adaptive_scan", "next_step", "pow2_step",
           "prologue_torch",
           "sparse_scan", "sparse_fire", "sparse_step", "graded_step",
           "resolve_backend", "available_backends", "kernel_info", "KernelUnavailableError", "BACKENDS"]

BACKENDS = ("torch", "c", "triton")
ENV_BACKEND = "SIGNGD_KERNEL"


# --------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------

def signgd_scan(target: torch.Tensor, y: torch.Tensor, etas, out_scale=None,
                spikes: torch.Tensor | None = None, backend: str | None = None, *,
                out: torch.Tensor | None = None, inplace: bool = False, pre: str | None = None,
                factor: torch.Tensor | None = None, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance a layer of signGD neurons by ``Tc = target.shape[0]`` steps.

    Args:
        target: ``[Tc, *S]``, the target ``f(x_t)`` of every step (already normalized). Never
            modified; any strides.
        y: ``[*S]``, the estimates before the first step. Not modified unless ``inplace``.
        etas: ``[Tc]`` step sizes (a tensor or a sequence of numbers).
        out_scale: None, a number, or a tensor broadcastable against ``[*S]`` (typically a scalar
            or a per-element scale of shape ``S[1:]``): ``out[t] = y_t * out_scale``.
        spikes: optional ``[Tc]`` tensor (float64 in the simulator); the number of spikes fired
            at each step is added to it in place.
        backend: "torch", "c", "triton", or None for auto (see the module docstring).
        out: optional buffer for the result: contiguous, shape ``[Tc, *S]``, the result's dtype,
            target's device. Either ``target`` itself (a contiguous target of the result's dtype:
            the scan then overwrites each target with its output, so a layer needs one buffer
            instead of two) or not overlapping it. Reusing one buffer across calls saves the
            allocation, whose first-touch page faults cost a CPU more than the scan itself.
        inplace: write the final estimates into ``y`` itself (then returned as ``y_final``),
            saving an allocation of one step's size; by default ``y`` is left unchanged.
        pre: None (``target`` holds the targets), ``"square"`` (the target of step t is
            ``torch.square(target[t])``) or ``"mul"`` (``target[t] * factor[t]``).
        factor: for ``pre="mul"``: a tensor of target's dtype that broadcasts against ``target``
            without enlarging it. The C kernel computes the product in the same pass when factor
            is one value per row (``factor.shape`` is ``target.shape`` with trailing dimensions
            of size 1); any other shape is multiplied by torch first.
        normalize: divide the (computed) target by ``out_scale`` before comparing: a normalized
            neuron tracks ``f(x) / s`` and passes ``y * s`` downstream.

    Returns:
        ``(out, y_final)``: ``out`` ``[Tc, *S]`` (contiguous; the ``out`` argument when given,
        else a new tensor; its dtype is that of ``y_t * out_scale`` under torch's promotion, i.e.
        y's dtype unless a tensor scale promotes it) and ``y_final`` ``[*S]``, the estimates after
        the last step. Unless ``inplace``, ``y_final`` is a new tensor (it is ``y`` itself only
        when ``Tc == 0``) and ``y`` is left as it was, so the caller keeps ``y_final`` as the new
        state.
    """
    if not isinstance(target, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("signgd_scan: target and y must be tensors")
    if target.dim() < 1:
        raise ValueError("signgd_scan: target must have a leading time dimension [Tc, *S]")
    if tuple(y.shape) != tuple(target.shape[1:]):
        raise ValueError(f"signgd_scan: y has shape {tuple(y.shape)}, expected target.shape[1:] = "
                         f"{tuple(target.shape[1:])}")
    Tc = target.shape[0]
    if not isinstance(etas, torch.Tensor):
        etas = torch.as_tensor(etas, dtype=torch.float64)
    if etas.dim() != 1 or etas.shape[0] != Tc:
        raise ValueError(f"signgd_scan: etas has shape {tuple(etas.shape)}, expected [{Tc}] (one per step)")
    if spikes is not None and (spikes.dim() != 1 or spikes.shape[0] != Tc):
        raise ValueError(f"signgd_scan: spikes has shape {tuple(spikes.shape)}, expected [{Tc}]")

    if out is not None:
        want = y.dtype if out_scale is None else torch.result_type(y, out_scale)
        if (not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(target.shape)
                or out.dtype != want or out.device != target.device or not out.is_contiguous()):
            raise ValueError(f"signgd_scan: out must be a contiguous {str(want).replace('torch.', '')} "
                             f"tensor of shape {tuple(target.shape)} on {target.device}")
        if overlap(out, target) and not same_buffer(out, target):
            raise ValueError("signgd_scan: out overlaps target; pass target itself (to scan in place) "
                             "or a separate buffer")

    if pre not in (None, "square", "mul"):
        raise ValueError(f"signgd_scan: unknown pre {pre!r}; expected None, 'square' or 'mul'")
    if pre == "mul" and not isinstance(factor, torch.Tensor):
        raise ValueError("signgd_scan: pre='mul' needs a factor tensor")
    normalize = bool(normalize) and out_scale is not None

    name = _choose(target, y, out_scale, backend)
    if pre is not None or normalize:
        fused = c.c_prologue(target, y, out_scale, pre, factor, normalize) if name == "c" else None
        if fused is None:  # torch computes the target; the scan then runs as usual
            donated = out is not None and same_buffer(out, target)  # the caller gave us its memory
            target = prologue_torch(target, pre, factor, out_scale if normalize else None, donated)
            name = _choose(target, y, out_scale, backend)
        else:
            res, y_final = c.scan_c(target, y, etas, out_scale, spikes, out, inplace, fused)
            if inplace and y_final is not y:
                y.copy_(y_final)
                y_final = y
            return res, y_final
    if name == "c":
        res, y_final = c.scan_c(target, y, etas, out_scale, spikes, out, inplace)
    elif name == "triton":
        res, y_final = triton_backend.scan_triton(target, y, etas, out_scale, spikes, out, inplace)
    else:
        res, y_final = scan_torch(target, y, etas, out_scale, spikes, out)
    if inplace and y_final is not y:
        y.copy_(y_final)
        y_final = y
    return res, y_final


def adaptive_scan(target: torch.Tensor, y: torch.Tensor, d: torch.Tensor, etas: torch.Tensor,
                  grow: float, shrink: float, out_scale=None, spikes: torch.Tensor | None = None,
                  out: torch.Tensor | None = None, pow2: bool = False,
                  floors: torch.Tensor | None = None) -> torch.Tensor:
    """Advance a layer of adaptive signGD neurons (``signgd.schedules.adaptive``) by
    ``Tc = target.shape[0]`` steps, in place.

    ``target`` ``[Tc, *S]`` (already normalized), ``y`` and ``d`` ``[*S]`` (updated in place),
    ``etas`` ``[Tc]``. State: ``d = (1 - 2 s_{t-1}) g_{t-1}``, the direction and gain of each
    neuron's last step (0 before the first), so the scan needs no separate spike history. Returns
    ``out[t] = y_t * out_scale`` (into ``out`` when given; ``out`` may be ``target`` itself, read
    before written). ``spikes`` (``[Tc]``) gets each step's spike count added. ``pow2``: each step
    is ``etas[t] * pow2_step(d)``, the gain rounded to a power of two (``d`` keeps it exact). ``floors``
    (``[Tc]``): each step's gain floor (``schedules.gain_floors``; None: ``MIN_GAIN``). Runs the
    C kernel where the auto backend choice picks it and it takes these inputs, else the torch loop
    (``reference.adaptive_scan_torch``).
    """
    if target.dim() >= 1 and _choose(target, y, out_scale, None) == "c":
        done = c.adaptive_scan_c(target, y, d, etas, grow, shrink, out_scale, spikes, out, pow2, floors)
        if done is not None:
            return done
    return adaptive_scan_torch(target, y, d, etas, grow, shrink, out_scale, spikes, out, pow2, floors)


def sparse_scan(target: torch.Tensor, y: torch.Tensor, etas: torch.Tensor, thresholds: torch.Tensor,
                out_scale=None, spikes: torch.Tensor | None = None, out: torch.Tensor | None = None, *,
                normalize: bool = False, graded: bool = False) -> torch.Tensor:
    """Advance a layer of sparse neurons (``dynamics="sparse"``) by ``Tc = target.shape[0]`` steps, ``y``
    in place; ``graded``: the graded neuron's steps (``dynamics="graded"``: ``reference.graded_step`` of the
    gap instead of ``+- eta_t``).

    ``target`` ``[Tc, *S]`` (already normalized, unless ``normalize``), ``y`` ``[*S]``, ``etas`` and
    ``thresholds`` ``[Tc]`` (``tolerance * eta_t``, rounded to y's dtype). At each step a neuron sends an
    up spike and adds ``eta_t`` when its target is above its estimate by more than the threshold, a down
    spike and subtracts ``eta_t`` when below by more, and stays silent otherwise
    (``reference.sparse_scan_torch``). Returns ``out[t] = y_t * out_scale`` (into ``out`` when given;
    ``out`` may be ``target`` itself, read before written); ``spikes`` (``[Tc]``) gets each step's count
    of up and down spikes added. ``normalize``: the neuron's target is ``target / out_scale`` (torch's
    division, ``prologue_torch``; the C kernel divides in its pass), ignored when ``out_scale`` is None.
    Runs the C kernel where the auto backend choice picks it and it takes these inputs, else the torch loop.
    """
    normalize = bool(normalize) and out_scale is not None
    if target.dim() >= 1 and _choose(target, y, out_scale, None) == "c":
        done = c.sparse_scan_c(target, y, etas, thresholds, out_scale, spikes, out, normalize, graded)
        if done is not None:
            return done
    if normalize:  # torch divides first (in place when the caller gave target's memory as out)
        target = prologue_torch(target, None, None, out_scale, out is not None and same_buffer(out, target))
        if target.dim() >= 1 and _choose(target, y, out_scale, None) == "c":
            done = c.sparse_scan_c(target, y, etas, thresholds, out_scale, spikes, out, graded=graded)
            if done is not None:
                return done
    return sparse_scan_torch(target, y, etas, thresholds, out_scale, spikes, out, graded)


def resolve_backend(target: torch.Tensor, y: torch.Tensor | None = None, out_scale=None,
                    backend: str | None = None) -> str:
    """The backend ``signgd_scan`` would use for these inputs ("torch", "c" or "triton").

    Raises like ``signgd_scan`` when ``backend`` (or ``$SIGNGD_KERNEL``) names one that cannot run.
    """
    if y is None:
        y = target[0] if target.dim() >= 1 and target.shape[0] > 0 else target.new_empty(target.shape[1:])
    return _choose(target, y, out_scale, backend)


def available_backends() -> list[str]:
    """The backends that can run on this machine (for some inputs): "torch" always, "c" when the
    C library compiled and loaded, "triton" when triton imports and a CUDA device is present."""
    names = ["torch"]
    if c.library()[0] is not None:
        names.append("c")
    if triton_backend.unavailable_reason() is None:
        names.append("triton")
    return names


def kernel_info() -> dict:
    """What the kernels module found: the backend auto picks for a CPU float32 tensor, the compiled
    C library (path and flags) or why it is unavailable, and triton's status."""
    lib, info = c.library()
    triton_reason = triton_backend.unavailable_reason()
    env = os.environ.get(ENV_BACKEND)
    return {
        "auto_cpu": "c" if lib is not None else "torch",
        "env": {ENV_BACKEND: env},
        "threads": torch.get_num_threads(),
        "c": {"available": lib is not None, "path": info.get("path"), "flags": info.get("flags"),
              "compiler": info.get("compiler"), "reason": info.get("reason"),
              "cache_dir": str(cache_dir())},
        "triton": {"available": triton_reason is None, "reason": triton_reason},
    }


# --------------------------------------------------------------------------------------------
# Choosing a backend
# --------------------------------------------------------------------------------------------

def _choose(target, y, out_scale, backend) -> str:
    """The backend to run for these inputs: ``resolve_backend`` with ``y`` given."""
    source = "backend"
    if backend is None:
        env = os.environ.get(ENV_BACKEND, "").strip().lower()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"${ENV_BACKEND}={env!r}: expected one of {', '.join(BACKENDS)} or auto")
            backend, source = env, f"${ENV_BACKEND}"
    if backend is not None and backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"signgd_scan: unknown backend {backend!r}; expected one of {BACKENDS} or None")
        if backend != "torch":
            reason = _reason_cannot_run(backend, target, y, out_scale)
            if reason is not None:
                raise KernelUnavailableError(f"the {backend!r} kernel ({source}={backend!r}) cannot run: {reason}")
        return backend
    # auto
    want = "triton" if target.device.type == "cuda" else "c" if target.device.type == "cpu" else "torch"
    if want != "torch":
        reason = _reason_cannot_run(want, target, y, out_scale)
        if reason is not None:
            c.log_once(logging.INFO, ("auto", want, reason),
                        "signgd kernels: using the torch backend instead of %r: %s", want, reason)
            return "torch"
    return want


def _describe(t: torch.Tensor) -> str:
    return f"{t.device.type} {str(t.dtype).replace('torch.', '')}"


def _reason_cannot_run(backend, target, y, out_scale) -> str | None:
    """Why ``backend`` cannot run these inputs (None: it can)."""
    if backend == "c":
        if target.device.type != "cpu" or target.dtype not in c.CPU_DTYPES:
            return f"the 'c' backend needs a CPU float32/float64 tensor; got {_describe(target)}"
    elif backend == "triton":
        if target.device.type != "cuda" or target.dtype not in triton_backend.DTYPES:
            return f"the 'triton' backend needs a CUDA float32/float64 tensor; got {_describe(target)}"
    if y.dtype != target.dtype or y.device != target.device:
        return f"y ({_describe(y)}) must have target's device and dtype ({_describe(target)})"
    if torch.is_grad_enabled() and (target.requires_grad or y.requires_grad or (
            isinstance(out_scale, torch.Tensor) and out_scale.requires_grad)):
        return "the inputs require grad (the fused kernels are not differentiable)"
    if backend == "c":
        lib, info = c.library()
        if lib is None:
            return f"the C library is unavailable: {info.get('reason')}"
    elif backend == "triton":
        reason = triton_backend.unavailable_reason()
        if reason is not None:
            return reason
    return None

