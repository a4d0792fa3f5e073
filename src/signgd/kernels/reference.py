"""The torch reference of the signGD scan: the rule itself in plain torch ops (any device and dtype).

``signgd_fire`` and ``signgd_update`` are one step of the neuron (``signgd.neurons`` re-exports
them); ``scan_torch`` is the ``"torch"`` backend of ``signgd_scan``; ``prologue_torch`` computes a
target the way the fused C prologue does (``pre`` / ``normalize``); ``next_step``, ``pow2_step`` and
``adaptive_scan_torch`` are the adaptive rule (``signgd.schedules.adaptive``); ``sparse_scan_torch`` is
the sparse neuron (``dynamics="sparse"``: signed spikes, silent within a tolerance). The C and Triton
backends are checked against these functions bit for bit.

The helpers at the end are shared with the fused backends (``c.py``, ``triton.py``): how a kernel
applies ``out_scale`` and finishes a call so that its result is the reference's.
"""
from __future__ import annotations

import torch

from ..schedules import MAX_GAIN, MIN_GAIN

__all__ = ["signgd_fire", "signgd_update", "scan_torch", "prologue_torch", "next_step", "pow2_step",
           "adaptive_scan_torch",
           "sparse_fire", "sparse_step", "graded_step", "graded_move", "sparse_thresholds", "gate", "sparse_scan_torch"]


# --------------------------------------------------------------------------------------------
# The plain scan
# --------------------------------------------------------------------------------------------

def signgd_fire(y_prev: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``s_t = 1[y_{t-1} >= f(x_t)]``: the neuron says "my estimate is too high"."""
    return y_prev >= target


def signgd_update(y_prev: torch.Tensor, spike: torch.Tensor, eta) -> torch.Tensor:
    """``y_t = y_{t-1} - eta_t (2 s_t - 1)``: one sign-gradient step on ``|y - f(x)|``."""
    return torch.where(spike, y_prev - eta, y_prev + eta)


def scan_torch(target, y, etas, out_scale, spikes, out=None):
    """``signgd_scan``'s ``"torch"`` backend (the arguments of ``signgd_scan``, already checked):
    ``(out, y_final)``."""
    Tc = target.shape[0]
    if Tc == 0:
        return empty_out(target, y, out_scale, out), y
    ys = None
    counts = torch.zeros(Tc, dtype=torch.int64, device=target.device) if spikes is not None else None
    for t in range(Tc):
        s = signgd_fire(y, target[t])
        y = signgd_update(y, s, etas[t])
        if ys is None:
            ys = out if out is not None and out.dtype == y.dtype else torch.empty(
                (Tc, *y.shape), dtype=y.dtype, device=y.device)
        ys[t] = y
        if counts is not None:
            counts[t] = s.sum()
    if spikes is not None:
        spikes += counts.to(spikes.device)
    return scaled(ys, out_scale, out), y


def prologue_torch(target, pre, factor, divisor, donated=False):
    """The target computed by torch: ``torch.square(target)`` or ``target * factor``, then
    ``/ divisor`` (the reference for the fused C prologue). ``donated``: ``target``'s memory may
    be overwritten."""
    t = target
    if pre == "square":
        t = torch.square(t)
    elif pre == "mul":
        t = t * factor
    if divisor is not None:
        own = t is not target or donated
        t = t.div_(divisor) if own and torch.result_type(t, divisor) == t.dtype else t / divisor
    return t


def _loop_buffers(target, y, out_scale, spikes, out):
    """The output buffer (``out`` or a new one of ``y * out_scale``'s dtype) and the per-step spike counts
    (None without ``spikes``) of a torch reference loop."""
    if out is None:
        dtype = y.dtype if out_scale is None else torch.result_type(y, out_scale)
        out = torch.empty(target.shape, dtype=dtype, device=target.device)
    counts = torch.zeros(target.shape[0], dtype=torch.int64, device=target.device) if spikes is not None else None
    return out, counts


# --------------------------------------------------------------------------------------------
# The adaptive scan (signgd.schedules.adaptive)
# --------------------------------------------------------------------------------------------

def next_step(spike: torch.Tensor, d: torch.Tensor, grow: float, shrink: float,
              floor: float = MIN_GAIN) -> torch.Tensor:
    """The new signed step ``d_t = (1 - 2 s_t) g_t`` from the spike and the last one (0: none yet), the gain
    clamped to ``[floor, MAX_GAIN]`` (``floor``: this step's, ``schedules.gain_floors``, a value of d's dtype).
    Every product is one operation in d's dtype, as in the C kernel (bit-identical results)."""
    direction = 1 - 2 * spike.to(d.dtype)
    size = d.abs()
    gain = torch.where(direction * d > 0, size * grow, size * shrink).clamp_(floor, MAX_GAIN)
    return direction * torch.where(d == 0, torch.ones_like(gain), gain)


#: The fraction bits of sqrt(2) in float64: a gain ``2**e * (1 + f)`` rounds up to ``2**(e+1)`` from there.
_SQRT2_FRACTION = 0x6A09E667F3BCD
_EXPONENT, _FRACTION = 0x7FF0000000000000, 0x000FFFFFFFFFFFFF
_SIGN_EXPONENT = -(1 << 63) | _EXPONENT  # 0xFFF0000000000000 as a signed 64-bit integer


def pow2_step(d: torch.Tensor) -> torch.Tensor:
    """``d`` with its magnitude rounded to the nearest power of two in log scale (sign kept, 0 stays 0),
    in d's dtype: on the float64 bits of ``|d|``, its exponent, plus one where its fraction is at least
    sqrt(2)'s. Integer operations only, as in the C kernel, so both round every gain alike (no ``log2``
    whose last bit could differ between libraries). For normal numbers (the gains are within
    ``[MIN_GAIN, MAX_GAIN]``)."""
    return round_to_pow2(d, _SQRT2_FRACTION)


def gain_floor_values(floors, Tc: int, dtype) -> list[float]:
    """Each step's gain floor as a Python number exactly representable in ``dtype`` (what the C kernel's
    ``T`` holds): ``MIN_GAIN`` when ``floors`` is None."""
    if floors is None:
        floors = torch.full((Tc,), MIN_GAIN, dtype=torch.float64)
    return [float(v) for v in floors.to(device="cpu", dtype=dtype)]


def round_to_pow2(d: torch.Tensor, up_fraction: int) -> torch.Tensor:
    """``d``'s sign and the power of two of its exponent, one above where its fraction bits (float64) are at
    least ``up_fraction``: ``pow2_step`` (sqrt(2)'s: the nearest in log scale) and ``graded_step`` (2**(63/64)'s)
    with their own boundary. Integer operations on the bits, as the C kernel's ``signgd_pow2_round``."""
    bits = d.to(torch.float64).view(torch.int64)
    up = (bits & _FRACTION) >= up_fraction
    return ((bits & _SIGN_EXPONENT) + up.to(torch.int64) * (1 << 52)).view(torch.float64).to(d.dtype)


def adaptive_scan_torch(target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None, pow2=False,
                        floors=None):
    """The reference loop of ``signgd.kernels.adaptive_scan`` in torch ops (any device). ``pow2``: each
    step is ``eta_t * pow2_step(d)`` (``adaptive(pow2=True)``; ``d`` keeps the exact gain). ``floors``
    (``[Tc]``): each step's gain floor (None: ``MIN_GAIN``), taken in d's dtype as the C kernel does."""
    Tc = target.shape[0]
    out, counts = _loop_buffers(target, y, out_scale, spikes, out)
    etas = etas.to(device=y.device, dtype=y.dtype)
    floors = gain_floor_values(floors, Tc, d.dtype)
    for t in range(Tc):
        s = y >= target[t]
        d.copy_(next_step(s, d, grow, shrink, floors[t]))
        y.add_(etas[t] * (pow2_step(d) if pow2 else d))
        if out_scale is None:
            out[t].copy_(y)
        else:
            torch.mul(y, out_scale, out=out[t])
        if counts is not None:
            counts[t] = s.sum()
    if spikes is not None:
        spikes += counts.to(spikes.device)
    return out


# --------------------------------------------------------------------------------------------
# The sparse scan (dynamics="sparse")
# --------------------------------------------------------------------------------------------

#: The fraction bits of 2**(63/64): a gap whose fraction is at least them takes the power of two above its own.
_GRADED_UP_FRACTION = 0xFA7C1819E90D8


def graded_step(d: torch.Tensor) -> torch.Tensor:
    """The graded neuron's step for its gap ``d``, in d's dtype: ``sign(d) 2**floor(log2 |d| + 1/64)``, the
    largest power of two not above ``2**(1/64) |d|`` (0 stays 0). On d's float64 bits: its sign and
    exponent, the exponent raised by one where its fraction is at least 2**(63/64)'s. Integer operations
    only, as in the C kernel (``signgd_graded_step``), so both give the same step.

    Why not simply the largest power of two not above ``|d|``: its boundaries are the powers of two
    themselves, and a gap is often exactly one (a max neuron copying an input that is a sum of a few
    powers of two; the sample that set a neuron's scale, whose normalized target is exactly 1). There the
    last bit of a sum picks the step, and the event-driven receivers' sums of changes round differently
    from the engine's sums of estimates. Here the boundaries sit 1/64 of an octave below the powers of
    two, at numbers with no short binary expansion: a gap that is exactly a power of two takes exactly that
    step, and no such gap lies near a boundary. (The boundary above them instead, the step never above the
    gap, made a max neuron copying a step of exactly its band lag by half of it, always on the same side:
    4-5 points on the VGG.) The step overshoots the gap by at most 1.1%, and the gap falls to at most half of
    itself. (A float64 gap below 2**-1022, subnormal, is at most 2**-1022.)"""
    return round_to_pow2(d, _GRADED_UP_FRACTION)


def sparse_fire(y_prev: torch.Tensor, target: torch.Tensor, threshold, graded: bool = False) -> torch.Tensor:
    """The signed spike of the sparse neuron, ``+1`` ("up"), ``-1`` ("down") or ``0`` (silent), in y's
    dtype: with ``d = f(x_t) - y_{t-1}`` (one subtraction), up when ``d > threshold``, down when
    ``d < -threshold``. ``threshold = tolerance * eta_t`` (computed once per step, in y's dtype).
    ``graded``: the graded neuron's, which fires when the step it would take, ``graded_step(d)``, is non-zero
    and at least the threshold (so it never sends a step below its band, and a gap that is exactly the
    threshold, as a max neuron copying a neighbour's step can have, is no tie: the step's boundaries are
    not short binary numbers)."""
    d = target - y_prev
    if graded:
        step, fired = graded_move(d, threshold)
        return torch.sign(step) * fired.to(y_prev.dtype)
    return (d > threshold).to(y_prev.dtype) - (d < -threshold).to(y_prev.dtype)


def graded_move(d: torch.Tensor, threshold) -> tuple[torch.Tensor, torch.Tensor]:
    """``(graded_step(d), fired)``: the graded neuron's step for its gap and where it fires (the step is
    non-zero and at least the threshold; a NaN gap never fires). The one firing rule of ``sparse_fire``,
    ``sparse_scan_torch`` and the C kernel."""
    step = graded_step(d)
    return step, (step.abs() >= threshold) & (step != 0) & (d == d)


def sparse_step(y_prev: torch.Tensor, target: torch.Tensor, spike: torch.Tensor, eta, graded: bool = False):
    """The estimate after a sparse neuron's spike (``sparse_fire``): ``y +- eta_t``, or for the graded
    neuron ``y + graded_step(target - y)``; unchanged where silent."""
    if graded:
        return torch.where(spike != 0, y_prev + graded_step(target - y_prev), y_prev)
    return torch.where(spike > 0, y_prev + eta, torch.where(spike < 0, y_prev - eta, y_prev))


def sparse_thresholds(etas: torch.Tensor, tolerance: float) -> torch.Tensor:
    """``tolerance * eta_t`` per step in the etas' dtype: the product of the (already rounded) steps and
    the tolerance, in float64, rounded once. The simulator and the event-driven check share it."""
    return (etas.to(torch.float64) * float(tolerance)).to(etas.dtype)


def gate(thresholds: torch.Tensor, t0: int, window: tuple[int, int] | None) -> torch.Tensor:
    """The thresholds of steps ``t0 .. t0 + len - 1`` with ``+inf`` outside the steps ``window = (first, last)``
    (``convert(window=)``, ``signgd.windows``), where no finite gap fires; ``thresholds`` itself when the window
    covers them all (or is None)."""
    if window is None:
        return thresholds
    steps = torch.arange(t0, t0 + thresholds.shape[0], device=thresholds.device)
    inside = (steps >= window[0]) & (steps <= window[1])
    if bool(inside.all()):
        return thresholds
    return torch.where(inside, thresholds, torch.full_like(thresholds, float("inf")))


def sparse_scan_torch(target, y, etas, thresholds, out_scale=None, spikes=None, out=None, graded=False):
    """The reference loop of ``signgd.kernels.sparse_scan`` in torch ops (any device), ``y`` updated in
    place: ``s_t = sparse_fire(y, target[t], thresholds[t])``, ``y_t = y_{t-1} + eta_t s_t`` (an add or a
    subtraction of ``eta_t``; silent: unchanged; ``graded``: ``y_{t-1} + graded_step(d)`` where that step is
    non-zero and at least the threshold, ``sparse_fire``),
    ``out[t] = y_t * out_scale``; ``spikes[t]`` gets the number of non-zero ``s_t`` (up and down spikes
    alike)."""
    Tc = target.shape[0]
    out, counts = _loop_buffers(target, y, out_scale, spikes, out)
    etas = etas.to(device=y.device, dtype=y.dtype)
    thresholds = thresholds.to(device=y.device, dtype=y.dtype)
    for t in range(Tc):
        d = target[t] - y
        if graded:
            step, fired = graded_move(d, thresholds[t])
            y.copy_(torch.where(fired, y + step, y))
            moved = (fired,)
        else:
            up, down = d > thresholds[t], d < -thresholds[t]
            y.copy_(torch.where(up, y + etas[t], torch.where(down, y - etas[t], y)))
            moved = (up, down)  # both where the threshold is negative: counted twice, as in C
        if out_scale is None:
            out[t].copy_(y)
        else:
            torch.mul(y, out_scale, out=out[t])
        if counts is not None:
            counts[t] = sum(m.sum() for m in moved)
    if spikes is not None:
        spikes += counts.to(spikes.device)
    return out


# --------------------------------------------------------------------------------------------
# Shared with the fused backends: the output the reference gives, and the buffers involved
# --------------------------------------------------------------------------------------------

def scaled(ys, out_scale, out):
    """``ys * out_scale`` (or ys), into ``out`` when given (``ys`` may be ``out`` itself)."""
    if out_scale is None:
        if out is not None and out is not ys:
            out.copy_(ys)
            return out
        return ys
    if out is None:
        return ys * out_scale
    return torch.mul(ys, out_scale, out=out)


def empty_out(target, y, out_scale, out=None):
    if out is not None:
        return out
    res = torch.empty((0, *y.shape), dtype=y.dtype, device=y.device)
    return res if out_scale is None else res * out_scale


def scale_for_kernel(out_scale, y, S):
    """How a fused kernel applies ``out_scale``: ``(mode, scale, length)``.

    mode "none": no scale; "kernel": multiply inside the kernel by ``scale`` (a contiguous 1-D
    tensor in y's dtype and device) with ``length`` 1 (a scalar) or M (element i uses
    ``scale[i % M]``); "after": the scale would change the result's dtype or broadcast against
    the time axis, so torch multiplies the kernel's output afterwards (still exact).
    """
    if out_scale is None:
        return "none", None, 0
    dtype, device = y.dtype, y.device
    if not isinstance(out_scale, torch.Tensor):
        if isinstance(out_scale, (bool, complex)):
            return "after", None, 0
        sc = torch.tensor([out_scale], dtype=torch.float64)
        if torch.result_type(y, out_scale) != dtype:
            return "after", None, 0
        return "kernel", sc.to(device=device, dtype=dtype), 1
    if torch.result_type(y, out_scale) != dtype or out_scale.is_complex():
        return "after", None, 0
    if out_scale.numel() == 1:
        if out_scale.dim() > len(S) + 1:
            return "after", None, 0
        return "kernel", out_scale.detach().reshape(1).to(device=device, dtype=dtype).contiguous(), 1
    shape = list(out_scale.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if len(shape) > len(S):
        return "after", None, 0          # broadcasts along time (or is malformed: torch will say)
    sc = out_scale.detach().to(device=device, dtype=dtype)
    if tuple(shape) == tuple(S[len(S) - len(shape):]):
        return "kernel", sc.reshape(-1).contiguous(), sc.numel()
    full = torch.broadcast_to(sc, tuple(S)).contiguous()
    return "kernel", full.reshape(-1), full.numel()


def kernel_out(target, scale_mode, out):
    """The buffer a fused kernel writes: ``out`` itself unless torch must scale afterwards."""
    if out is not None and scale_mode != "after":
        return out
    return torch.empty(target.shape, dtype=target.dtype, device=target.device)


def finish(res, y_final, out_scale, scale_mode, counts, spikes, out):
    if counts is not None:
        spikes += counts.to(spikes.device)
    if scale_mode == "after":
        res = scaled(res, out_scale, out)
    return res, y_final


def overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors' memory ranges intersect (same storage, intersecting byte ranges)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        lo = t.data_ptr()
        hi = lo + t.element_size() * (1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride())))
        return lo, hi

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def same_buffer(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` are the same contiguous memory, element for element."""
    return (a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.shape == b.shape
            and a.is_contiguous() and b.is_contiguous())
