"""Spiking neurons: the signGD neuron (any target), its sparse form (``dynamics="sparse"``: signed spikes,
silent within a tolerance) and its graded form (``dynamics="graded"``: a spike that also carries a power of
two), the subgradient neuron of the paper's theorem, and the classic
integrate-and-fire neuron (``dynamics="if"``, what ``signgd.nir.export`` writes as ``nir.IF``).

The update rules are small pure tensor functions, so that a test can drive one neuron by hand (the
signGD rule is defined once, beside its fused kernels in ``signgd.kernels``, and re-exported here). The
``SpikingNeuron`` module holds what conversion fixed (target, normalization scale, ``A(0)``) as
buffers; the per-run state (estimates) lives in a dict owned by the caller, so a converted network
can be run by several callers at once and never carries state from one call into the next.

Units: with a normalization scale ``s`` the neuron works on ``f(x) / s`` and its estimate ``y`` is
in those normalized units; what it passes downstream is ``s * y`` (signGD) or ``s * spike``
(subgradient, IF), i.e. raw ANN units again. The IF neuron works in raw units: ``s`` is its threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dynamics import BAND_DYNAMICS
from .kernels import adaptive_scan, prologue_torch, signgd_fire, signgd_scan, signgd_update, sparse_scan
from .kernels.reference import gate, sparse_thresholds
from .targets import get_target

__all__ = ["signgd_fire", "signgd_update", "subgradient_step", "if_step", "SpikingNeuron"]


def subgradient_step(x_prev, y_prev, a, eta):
    """One step of the subgradient (integrate-and-fire) neuron of the paper's theorem.

    ``x_t = x_{t-1} - eta (x_{t-1} - a_t)`` (running average of the input),
    ``s_t = 1[x_t > y_{t-1}]``, ``y_t = y_{t-1} - eta (y_{t-1} - s_t)`` (running spike rate).
    Returns ``(x_t, y_t, s_t)`` with ``s_t`` as a 0/1 tensor of the input's dtype.
    """
    x = x_prev - eta * (x_prev - a)
    s = (x > y_prev).to(x.dtype)
    y = y_prev - eta * (y_prev - s)
    return x, y, s


def if_step(v_prev, z_prev, a, threshold):
    """One step of the classic integrate-and-fire neuron (``dynamics="if"``, exported as ``nir.IF``),
    reset by subtraction, from ``v_0 = 0``: ``v_t = v_{t-1} + a_t - threshold z_{t-1}``,
    ``z_t = 1[v_t > threshold]`` (NIR's strict firing). Returns ``(v_t, z_t)``, ``z_t`` 0/1 in ``a``'s dtype.

    ``v`` is the potential before the reset, and the reset of a spike is subtracted at the next step: the
    same neuron as subtracting at once (the spikes are those of ``v <- v + a; fire; v <- v - threshold``),
    in the order of operations of snnTorch's ``Leaky`` with ``beta = 1``, so that a library running the
    exported graph with it computes the same potentials bit for bit. Reset by subtraction keeps the
    charge above the threshold; NIR's IF text resets *to* ``v_reset``, which libraries read differently
    (``docs/nir.md``): reset to zero loses up to one step of input per spike, and most of the accuracy.
    """
    v = v_prev + a - z_prev * threshold
    return v, (v > threshold).to(v.dtype)


# Unary targets with an in-place form (each torch's own kernel for the target, so the numbers are
# those of the target function). When the simulator hands a neuron an input that nothing else will
# read (``owned``), the target is computed in that buffer and the scan writes its output over it:
# no layer-sized allocation per neuron per chunk, which is what bounds the simulator's peak memory
# (and a CPU pays for every fresh page it touches).
_INPLACE = {
    "relu": lambda x: torch.relu_(x),
    "leaky_relu": lambda x, negative_slope=0.01: F.leaky_relu_(x, negative_slope),
    "gelu": lambda x, approximate="none": torch.ops.aten.gelu_(x, approximate=approximate),
    "silu": lambda x: F.silu(x, inplace=True),
    "sigmoid": lambda x: torch.sigmoid_(x),
    "tanh": lambda x: torch.tanh_(x),
    "hardswish": lambda x: F.hardswish(x, inplace=True),
    "hardsigmoid": lambda x: F.hardsigmoid(x, inplace=True),
    "hardtanh": lambda x, min_val=-1.0, max_val=1.0: torch.clamp_(x, min_val, max_val),
    "elu": lambda x, alpha=1.0: F.elu_(x, alpha),
    "mish": lambda x: F.mish(x, inplace=True),
    "abs": lambda x: torch.abs_(x),
    "exp": lambda x: torch.exp_(x),
    "sqrt": lambda x: torch.sqrt_(torch.clamp_min_(x, 0)),
}


def _square_prologue(xs, params):
    return xs[0], "square", None


def _broadcasts_into(small, big) -> bool:
    """``small`` broadcasts against ``big`` without enlarging it."""
    return len(small) <= len(big) and all(d == 1 or d == e for d, e in zip(reversed(small), reversed(big)))


def _divide_sqrt_prologue(xs, params):
    """``divide_sqrt(c, v) = c * rsqrt(max(v, eps))``: the small factor is computed here, the
    layer-sized product inside the scan."""
    c, v = xs
    factor = torch.rsqrt(v.clamp_min(params.get("eps", 1e-5)))
    if not _broadcasts_into(factor.shape, c.shape) or factor.dtype != c.dtype:
        return None
    return c, "mul", factor


# Targets the scan computes in its own pass from the neuron's inputs (``signgd_scan``'s ``pre``),
# so the layer-sized target is never written to memory: the LayerNorm neurons.
_PROLOGUES = {"square": _square_prologue, "divide_sqrt": _divide_sqrt_prologue}


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class SpikingNeuron(nn.Module):
    """A layer of neurons sharing one target; created by conversion, one per nonlinearity node.

    Called as a plain module it computes the exact target (the ANN side). The simulator calls
    ``run`` instead, with the neuron's state and a chunk of time steps.
    """

    def __init__(self, target: str, params: dict | None = None):
        super().__init__()
        self.target = target
        self.params = dict(params or {})
        self._spec = get_target(target)
        self.arity = self._spec.arity
        self.preset_normalized = self._spec.preset_normalized
        # Per-element normalization scale and A(0) (one per input), shaped like one sample.
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("bias0", torch.zeros(()))
        # Where a signGD neuron's estimate starts, in raw units (shape of one sample's output, or 0):
        # y_0 = start / scale (``convert(start=...)``; the paper's neuron starts at 0).
        self.register_buffer("start", torch.zeros(()))
        self.normalized = False

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"target={self.target}{', ' + params if params else ''}, normalized={self.normalized}"

    def f(self, *xs: torch.Tensor) -> torch.Tensor:
        return self._spec.fn(*xs, **self.params)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != self.arity:
            raise ValueError(f"{self.target} neuron takes {self.arity} input(s), got {len(xs)}")
        return self.f(*xs)

    def set_scale(self, scale: torch.Tensor | None) -> None:
        """Normalize by a per-element scale (shape of one sample's output); None removes it."""
        if scale is None:
            self.scale = torch.ones((), dtype=self.scale.dtype, device=self.scale.device)
            self.normalized = False
        else:
            self.scale = scale.detach().clone()
            self.normalized = True

    def set_start(self, start: torch.Tensor | None) -> None:
        """Start the estimate at ``start`` (raw units, shape of one sample's output) instead of 0."""
        self.start = torch.zeros((), dtype=self.scale.dtype, device=self.scale.device) if start is None \
            else start.detach().clone()

    @property
    def starts_at_zero(self) -> bool:
        return not bool(self.start.ne(0).any())

    def initial_estimate(self, like: torch.Tensor) -> torch.Tensor:
        """``y_0`` for a batch shaped like ``like`` (normalized units): ``start / scale``."""
        if self.starts_at_zero:
            return torch.zeros_like(like)
        y0 = self.start.to(like.device, like.dtype)
        if self.normalized:
            y0 = y0 / self.scale.to(like.device, like.dtype)
        return y0.expand_as(like).clone()

    def initial_output(self, like: torch.Tensor) -> torch.Tensor:
        """What the neuron passes downstream before its first step (raw units): ``scale * y_0``, computed
        as the scans compute their outputs, so that a silent first step sends no change."""
        y0 = self.initial_estimate(like)
        return y0 * self.scale.to(like.device, like.dtype) if self.normalized else y0

    # ---- simulation -------------------------------------------------------------------------
    def init_state(self, like: torch.Tensor, dynamics: str, adaptive: bool = False) -> dict:
        """Fresh state for a batch; ``like`` has the shape of one step's output ``[B, ...]``.
        ``adaptive``: also the signed last step of each neuron (``signgd.schedules.adaptive``)."""
        state = {"y": self.initial_estimate(like)}
        if adaptive:
            state["d"] = torch.zeros_like(like)
        if dynamics == "subgradient":
            state["x"] = (self.bias0 / self.scale).expand_as(like).clone()
        if dynamics == "if":
            state["v"], state["z"] = torch.zeros_like(like), torch.zeros_like(like)
        return state

    def run(self, state: dict, xs: tuple[torch.Tensor, ...], etas: torch.Tensor, dynamics: str,
            spikes_out: torch.Tensor | None = None, owned: bool = False,
            rule: tuple[float, float] | None = None, tolerance: float | None = None,
            floors: torch.Tensor | None = None, early: int = 0, window: tuple[int, int] | None = None,
            t0: int = 1) -> torch.Tensor:
        """Advance ``len(etas)`` steps. ``xs`` are the input sequences ``[Tc, B, ...]``.

        Returns the sequence passed downstream, ``[Tc, B, ...]``. When ``spikes_out`` (a
        ``[Tc]`` tensor) is given, the number of spikes fired at each step is added to it.
        ``owned``: the caller will not read ``xs[0]`` again, so the neuron may overwrite it.
        ``rule``: an adaptive schedule's ``schedules.Rule`` (``grow, shrink, pow2, tail, start, early``; signGD
        only; state from ``init_state(..., adaptive=True)``), or None; ``floors``: its gain floor at each of these steps
        (``schedules.gain_floors``; None: ``MIN_GAIN``); ``early``: how many of these steps, the first ones,
        are in the rule's early phase (``adaptive(start=)``). ``tolerance``: the sparse dynamics' silence band,
        as a fraction of ``eta_t``; ``window``: the steps ``(first, last)`` at which this layer may spike
        (``convert(window=)``, ``signgd.windows``), and ``t0`` the step the chunk begins at.
        """
        if dynamics in BAND_DYNAMICS:
            return self._run_sparse(state, xs, etas, spikes_out, owned, tolerance, graded=dynamics == "graded",
                                    window=window, t0=t0)
        if dynamics == "signgd" and rule is not None:
            return self._run_adaptive(state, xs, etas, spikes_out, owned, rule, floors, early)
        if dynamics == "signgd":
            return self._run_signgd(state, xs, etas, spikes_out, owned)
        if dynamics == "subgradient":
            return self._run_subgradient(state, xs, etas, spikes_out)
        if dynamics == "if":
            return self._run_if(state, xs, spikes_out)
        raise ValueError(f"unknown dynamics {dynamics!r}")

    def _run_signgd(self, state, xs, etas, spikes_out, owned=False, out=None):
        """``owned``: the caller will not read ``xs[0]`` again (nor does another input share its
        memory), so the target and then the output may be written over it. ``out``: the buffer to write the
        output into (contiguous, of the result's dtype), else one of ours."""
        y = state["y"]
        scale = self.scale if self.normalized else None
        result_dtype = y.dtype if scale is None else torch.result_type(y, scale)
        prologue = _PROLOGUES.get(self.target)
        found = prologue(xs, self.params) if prologue is not None else None
        if found is not None:
            # The scan computes the target (and divides it by the scale) in its own pass.
            x, pre, factor = found
            normalize = scale is not None and scale.dtype == x.dtype
            if scale is not None and not normalize:
                found = None  # a scale of another dtype: the plain path below divides first
        if found is not None:
            buf = out if out is not None else x if owned and x.is_contiguous() and x.dtype == result_dtype else None
            res, state["y"] = signgd_scan(x, y, etas, scale, spikes_out, inplace=True, out=buf,
                                          pre=pre, factor=factor, normalize=normalize)
            return res
        target, fresh = self._target(xs, owned)
        normalize = scale is not None and scale.dtype == target.dtype
        if scale is not None and not normalize:
            target, fresh = (target.div_(scale) if fresh else target / scale), True
        # The fused scan (signgd.kernels): divide by the scale, fire, step and scale back in one
        # pass over memory, writing each output over its target when that buffer is ours.
        buf = out if out is not None else \
            target if fresh and target.is_contiguous() and target.dtype == result_dtype else None
        res, state["y"] = signgd_scan(target, y, etas, scale, spikes_out, inplace=True, out=buf,
                                      normalize=normalize)
        return res

    def _target(self, xs, owned):
        """``(f(*xs), fresh)``: computed in ``xs[0]``'s buffer when the neuron owns it and the
        target has an in-place form; ``fresh`` when the result shares memory with no input."""
        inplace = _INPLACE.get(self.target) if owned and len(xs) == 1 else None
        if inplace is not None:
            return inplace(xs[0], **self.params), True
        target = self.f(*xs)
        return target, not any(_shares_memory(target, x) for x in xs)

    def _raw_target(self, xs, owned):
        """``(f(*xs), fresh)`` computed by torch, through the LayerNorm neurons' prologue where they have
        one (``fresh``: a buffer no input shares)."""
        prologue = _PROLOGUES.get(self.target)
        found = prologue(xs, self.params) if prologue is not None else None
        if found is not None:
            x, pre, factor = found
            return prologue_torch(x, pre, factor, None), True
        return self._target(xs, owned)

    def _normalized_target(self, xs, owned):
        """``(f(*xs) / scale, fresh)`` computed by torch."""
        target, fresh = self._raw_target(xs, owned)
        if self.normalized:
            target, fresh = prologue_torch(target, None, None, self.scale, donated=fresh), True
        return target, fresh

    def _run_sparse(self, state, xs, etas, spikes_out, owned, tolerance, graded=False, window=None, t0=1):
        """The sparse neuron (``signgd.kernels.sparse_scan``): silent while its estimate is within
        ``tolerance * eta_t`` of its target, an up or down spike (a step of ``eta_t``) otherwise;
        ``graded``: a step of the largest power of two not above 2**(1/64) times its gap (``dynamics="graded"``,
        ``kernels.reference.graded_step``). ``window``: silent outside these steps (an infinite threshold,
        ``kernels.reference.gate``)."""
        if tolerance is None:
            raise ValueError("the sparse dynamics needs its tolerance (a fraction of eta_t)")
        scale = self.scale if self.normalized else None
        y = state["y"]
        if window is not None and (t0 > window[1] or t0 + etas.shape[0] - 1 < window[0]):
            # the whole chunk outside its window: silent, its output held (the scan's y * scale at every step), and
            # its target not needed
            held = y if scale is None else torch.mul(y, scale)
            return held.unsqueeze(0).expand(etas.shape[0], *held.shape).contiguous()
        target, fresh = self._raw_target(xs, owned)
        result_dtype = y.dtype if scale is None else torch.result_type(y, scale)
        buf = target if fresh and target.is_contiguous() and target.dtype == result_dtype else None
        # The scan divides by the scale in its own pass (torch first where the kernel cannot).
        thresholds = gate(sparse_thresholds(etas, tolerance), t0, window)
        return sparse_scan(target, y, etas, thresholds, scale, spikes_out, out=buf,
                           normalize=scale is not None, graded=graded)

    def _run_adaptive(self, state, xs, etas, spikes_out, owned, rule, floors=None, early=0, out=None):
        """Adaptive steps (``signgd.schedules.adaptive``): torch computes the normalized target, then the
        scan steps each neuron by its own gain, writing its output over the target when the
        target buffer is ours. The first ``early`` steps (up to ``adaptive(start=)``) are scanned with the
        rule's early ``(grow, shrink)``, unrounded (``(1, 1)``: the gain stays 1, the plain signGD neuron).

        An early phase of plain neurons runs on the plain fused scan (``_run_signgd``, bit for bit the same, and
        faster: the target computed in its pass) up to the step before ``start``; only that step goes through the
        adaptive scan, which records the direction of its step (``d``, all the later gains start from). ``out``: the
        buffer to write the output into (contiguous, of the result's dtype), else one of ours."""
        scale = self.scale if self.normalized else None
        y = state["y"]
        result_dtype = y.dtype if scale is None else torch.result_type(y, scale)
        plain = early - 1 if rule.plain_early else 0
        if plain > 0:
            if out is None:
                out = torch.empty((etas.shape[0], *y.shape), dtype=result_dtype, device=y.device)
            part = None if spikes_out is None else spikes_out[:plain]
            self._run_signgd(state, tuple(x[:plain] for x in xs), etas[:plain], part, owned, out=out[:plain])
            part = None if spikes_out is None else spikes_out[plain:]
            self._run_adaptive(state, tuple(x[plain:] for x in xs), etas[plain:], part, owned, rule,
                               None if floors is None else floors[plain:], early - plain, out=out[plain:])
            return out
        target, fresh = self._normalized_target(xs, owned)
        buf = out if out is not None else \
            target if fresh and target.is_contiguous() and target.dtype == result_dtype else None
        if not early:
            return adaptive_scan(target, y, state["d"], etas, rule.grow, rule.shrink, scale, spikes_out, out=buf,
                                 pow2=rule.pow2, floors=floors)
        if buf is None:
            buf = torch.empty(target.shape, dtype=result_dtype, device=target.device)
        for part, (grow, shrink), pow2 in ((slice(0, early), rule.early, False),
                                           (slice(early, None), (rule.grow, rule.shrink), rule.pow2)):
            if part.start == etas.shape[0]:
                break
            adaptive_scan(target[part], y, state["d"], etas[part], grow, shrink, scale,
                          None if spikes_out is None else spikes_out[part], out=buf[part], pow2=pow2,
                          floors=None if floors is None else floors[part])
        return buf

    def _check_relu(self, dynamics: str) -> bool:
        """Whether this is a max neuron (a plain max over the scaled spikes, as in the reference code);
        refuse any target other than ReLU and max."""
        if self.target == "max":
            return True
        if self.target != "relu":
            raise ValueError(f"the {dynamics} (integrate-and-fire) dynamics covers ReLU networks; "
                             f"a {self.target} neuron needs dynamics='signgd'")
        return False

    def _run_if(self, state, xs, spikes_out):
        """The IF neuron (``if_step``) on the raw input current, the scale as its threshold."""
        if self._check_relu("if"):
            return self.f(*xs)
        (a,) = xs
        threshold = self.scale.to(a.dtype)
        spikes = torch.empty_like(a)
        v, z = state["v"], state["z"]
        for t in range(a.shape[0]):
            v, z = if_step(v, z, a[t], threshold)
            spikes[t] = z
        state["v"], state["z"] = v, z
        if spikes_out is not None:
            spikes_out += spikes.flatten(1).sum(1).to(spikes_out.dtype)
        return spikes * threshold

    def _run_subgradient(self, state, xs, etas, spikes_out):
        if self._check_relu("subgradient"):
            return self.f(*xs)
        (a,) = xs
        if self.normalized:
            a = a / self.scale
        spikes = torch.empty_like(a)
        x, y = state["x"], state["y"]
        for t in range(a.shape[0]):
            x, y, spikes[t] = subgradient_step(x, y, a[t], etas[t])
        state["x"], state["y"] = x, y
        if spikes_out is not None:
            spikes_out += spikes.flatten(1).sum(1).to(spikes_out.dtype)
        return spikes * self.scale if self.normalized else spikes
