"""Run a converted graph for T steps: layer-major within a chunk of steps, time-major across chunks.

The graph has no feedback, so within a chunk of ``Tc`` steps every affine op runs once on a batch of
``Tc * B`` (time folded into the batch: one large matrix product per layer), and only the neurons
loop over time, element-wise. Neuron, encoder and decoder states carry from one chunk to the next,
so ``chunk=1`` is the plain time-major simulation and ``chunk=T`` the fully layer-major one; all
give the same numbers up to float rounding. The chunk size bounds memory.

All state of a run lives in this module's ``_Run`` object, created per call: a converted network
holds no state between calls and can be run from several threads at once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .codecs import InputEncoder, OutputDecoder
from .graph.spellings import ELEMENTWISE_INPLACE, ELEMENTWISE_OUT
from .neurons import SpikingNeuron
from .schedules import Schedule, check_dynamics, gain_floors
from .targets import CONTRACTIONS


@dataclass
class SimulationResult:
    """Outputs at the requested steps, and (when asked) spike counts per neuron layer and step."""

    outputs: dict[int, torch.Tensor]
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [T] total over the batch
    neurons: dict[str, int] = field(default_factory=dict)  # name -> neurons per sample
    batch_size: int = 0

    def spikes_per_sample(self, T: int | None = None) -> dict[str, float]:
        """Spikes fired per sample by each layer over the first T steps (all steps if None)."""
        return {k: float(v[:T].sum()) / max(self.batch_size, 1) for k, v in self.spikes.items()}

    def firing_rates(self, T: int | None = None) -> dict[str, float]:
        """Fraction of (neuron, step) pairs that spiked, per layer."""
        out = {}
        for k, v in self.spikes.items():
            steps = v[:T].numel()
            out[k] = float(v[:T].sum()) / max(self.batch_size * self.neurons[k] * steps, 1)
        return out


class _Run:
    def __init__(self, dynamics: str, batch: int, stats: bool, total_steps: int, probe=None,
                 rule=None, tolerance: float | None = None, windows: dict | None = None):
        self.dynamics = dynamics
        self.windows = windows or {}  # convert(window=): each neuron layer's steps (first, last), signgd.windows
        self.rule = rule  # an adaptive schedule's schedules.Rule (grow, shrink, pow2, tail, start, early), or None
        self.tolerance = tolerance  # the sparse dynamics' silence band (a fraction of eta_t), or None
        self.probe = probe
        self.batch = batch
        self.stats = stats
        self.total_steps = total_steps
        self.states: dict[str, dict] = {}
        self.spikes: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.etas: torch.Tensor | None = None
        self.floors: torch.Tensor | None = None  # the adaptive gain's floor at the chunk's steps (gain_floors)
        self.early = 0  # how many of the chunk's first steps are in the rule's early phase (adaptive(start=))
        self.t0 = 1

    def neuron(self, name: str, mod: SpikingNeuron, args, owned: bool = False) -> torch.Tensor:
        steps = self.etas.shape[0]
        # dim 0 holds the steps, each step's rows sample-major (k rows per sample: a windowed
        # attention has one per window; conversion checks this, graph/batchdim.py)
        xs = tuple(a.reshape(steps, -1, *a.shape[1:]) for a in args)
        state = self.states.get(name)
        if state is None:
            like = _like_output(mod, tuple(x[0] for x in xs))
            state = self.states[name] = mod.init_state(like, self.dynamics, adaptive=self.rule is not None)
            if self.stats:
                self.spikes[name] = torch.zeros(self.total_steps, dtype=torch.float64, device=like.device)
                self.neurons[name] = like.numel() // self.batch
        counts = None
        if self.stats:
            counts = torch.zeros(steps, dtype=torch.float64, device=xs[0].device)
        out = mod.run(state, xs, self.etas, self.dynamics, counts, owned=owned, rule=self.rule,
                      tolerance=self.tolerance, floors=self.floors, early=self.early, window=self.windows.get(name),
                      t0=self.t0)
        if counts is not None:
            self.spikes[name][self.t0 - 1:self.t0 - 1 + steps] += counts
        if self.probe is not None:
            self.probe(name, self.t0, out)
        return out.reshape(-1, *out.shape[2:])


def _like_output(mod: SpikingNeuron, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """An uninitialized tensor shaped like one step's output ``[B, ...]`` (it sizes the state).
    The target runs on the first sample only, so no layer-sized buffer is computed for it (a
    neuron acts on each sample separately)."""
    one = mod(*(x[:1] for x in xs))
    return torch.empty((xs[0].shape[0], *one.shape[1:]), dtype=one.dtype, device=one.device)


def _storages(value, out: set) -> None:
    """Add the storages of every tensor inside an env value (tensors, tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        out.add(value.untyped_storage().data_ptr())
    elif isinstance(value, (tuple, list)):
        for v in value:
            _storages(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _storages(v, out)


# What a node does (``_ChunkInterpreter._steps``).
_INPUT, _CONST, _CALL, _METHOD, _BINARY, _NEURON, _OUTPUT = range(7)

# Element-wise affine ops (residual adds, LayerNorm's weight and bias, scalings) -> their in-place
# form, which may write the result over the first operand, and their ``out=`` form, which may write
# it into a contiguous buffer (``graph/spellings.py``): the same torch kernels as the plain op, so
# the same numbers. Each one done in place is a layer-sized allocation fewer.
_INPLACE_BINARY = ELEMENTWISE_INPLACE
_OUT_FORMS = ELEMENTWISE_OUT


class _ChunkInterpreter(fx.Interpreter):
    """Runs one chunk. Values are freed after their last use (``garbage_collect_values``), and a
    node that is the last reader of its first input's memory gets to overwrite it: a neuron (with
    the scan writing its output over its target, a neuron then allocates nothing layer-sized) or
    an element-wise add, sub, mul or div whose result would have that input's shape, dtype and
    strides."""

    def __init__(self, gm: fx.GraphModule, run: _Run | None):
        super().__init__(gm, garbage_collect_values=True)
        self.sim = run
        # Parameters and buffers are never handed to a node to overwrite.
        self.constants: set = set()
        for t in [*gm.parameters(), *gm.buffers()]:
            _storages(t, self.constants)
        # Element-wise ops read only by element-wise neurons: their result is written contiguous
        # whatever the layout of their inputs (LayerNorm's x - mean(x) on a transposed residual
        # stream), so the neurons' fused scans read it in place instead of copying it first; also
        # rather than in place over a strided first input (a LayerNorm right after a transpose),
        # which would keep that layout and have every neuron reading it copy it. The values are
        # the same in any layout, and no reduction or matrix product reads them.
        self.neuron_fed = {n for n in gm.graph.nodes if n.op == "call_function" and n.target in _INPLACE_BINARY
                           and n.users and all(self._elementwise_neuron(u) for u in n.users)}

        # What each node does, looked up once: the loop in ``run`` then costs a few microseconds a
        # node (the generic ``fx.Interpreter.run_node`` costs several times that, paid by every
        # node of every chunk of every slice of the batch).
        self._steps = []
        for n in gm.graph.nodes:
            if n.op == "call_module":
                mod = self.fetch_attr(n.target)
                kind = _NEURON if isinstance(mod, SpikingNeuron) else _CALL
                callee = mod
                if kind == _NEURON and n.kwargs:
                    raise ValueError(f"neuron {n.target!r} takes positional inputs only")
            elif n.op == "call_function":
                binary = n.target in _INPLACE_BINARY and len(n.args) == 2 and not n.kwargs
                kind, callee = (_BINARY if binary else _CALL), n.target
            elif n.op == "call_method":
                kind, callee = _METHOD, n.target
            elif n.op == "get_attr":
                kind, callee = _CONST, self.fetch_attr(n.target)
            elif n.op == "placeholder":
                kind, callee = _INPUT, None
            elif n.op == "output":
                kind, callee = _OUTPUT, None
            else:
                raise ValueError(f"unknown node op {n.op!r}")
            self._steps.append((n, kind, callee, tuple(self.user_to_last_uses.get(n, ()))))

    def _elementwise_neuron(self, n: fx.Node) -> bool:
        mod = self.submodules.get(n.target) if n.op == "call_module" else None
        return isinstance(mod, SpikingNeuron) and mod.target not in CONTRACTIONS

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """One pass over the graph on ``x`` (a chunk: steps x samples folded into the batch)."""
        env = self.env = {}
        load = env.__getitem__
        try:
            for n, kind, callee, last_uses in self._steps:
                if kind == _INPUT:
                    value = x
                elif kind == _CONST:
                    value = callee
                else:
                    args = fx.node.map_arg(n.args, load)
                    if kind == _NEURON:
                        value = self.sim.neuron(n.target, callee, args, self._owned(n, args))
                    elif kind == _BINARY:
                        if n in self.neuron_fed and not _contiguous(args[0]):
                            value = _contiguous_result(callee, *args)  # not in place: strided
                        elif _fits_in_place(callee, *args) and self._owned(n, args):
                            value = _INPLACE_BINARY[callee](*args)
                        elif n in self.neuron_fed:
                            value = _contiguous_result(callee, *args)
                        else:
                            value = callee(*args)
                    elif kind == _OUTPUT:
                        return args[0]
                    else:
                        kwargs = fx.node.map_arg(n.kwargs, load)
                        if kind == _METHOD:
                            value = getattr(args[0], callee)(*args[1:], **kwargs)
                        else:
                            value = callee(*args, **kwargs)
                env[n] = value
                for done in last_uses:
                    del env[done]
        except Exception as e:
            if hasattr(e, "add_note"):  # Python 3.11+
                e.add_note(f"while simulating node {n.format_node()}")
            raise
        finally:
            self.env = {}
        raise RuntimeError("the graph has no output node")

    def _owned(self, n: fx.Node, args) -> bool:
        """Whether ``n`` is the last reader of its first input's memory (no other input and no
        other live value shares it)."""
        if not n.args or not isinstance(n.args[0], fx.Node) or not isinstance(args[0], torch.Tensor):
            return False
        src = n.args[0]
        if src.op not in ("call_module", "call_function", "call_method"):
            return False
        if src not in self.user_to_last_uses.get(n, ()):
            return False  # a later node reads it
        ptr = args[0].untyped_storage().data_ptr()
        if ptr in self.constants:
            return False
        live: set = set()
        for other in args[1:]:
            _storages(other, live)
        for node, value in self.env.items():
            if node is not src:
                _storages(value, live)
        return ptr not in live


def _contiguous(a) -> bool:
    return not isinstance(a, torch.Tensor) or a.is_contiguous()


def _contiguous_result(op, a, b):
    """``op(a, b)`` written into a contiguous tensor (the same values as ``op(a, b)``, which would
    take the layout of a transposed ``a``)."""
    if not isinstance(a, torch.Tensor) or (isinstance(b, torch.Tensor) and b.device != a.device):
        return op(a, b)
    shape = _broadcast(tuple(a.shape), tuple(b.shape)) if isinstance(b, torch.Tensor) else a.shape
    out = torch.empty(shape, dtype=torch.result_type(a, b), device=a.device)
    return _OUT_FORMS[op](a, b, out=out)


@functools.lru_cache(maxsize=4096)
def _broadcast(a: tuple, b: tuple) -> torch.Size:
    return torch.broadcast_shapes(a, b)


def _fits_in_place(op, a, b) -> bool:
    """``op(a, b)`` can be computed as ``a.op_(b)`` with the same result: the out-of-place result
    would have ``a``'s shape, dtype and strides (torch's own answer, from a meta-tensor run, cached
    per layout), so the values, and the layout every later op sees, are the same."""
    if not isinstance(a, torch.Tensor) or a.requires_grad:
        return False
    if isinstance(b, torch.Tensor):
        if b.device != a.device:
            return False
        layout_b = (tuple(b.shape), b.stride(), b.dtype)
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        layout_b = type(b)
    else:
        return False
    return _keeps_layout(op, tuple(a.shape), a.stride(), a.dtype, layout_b)


@functools.lru_cache(maxsize=4096)
def _keeps_layout(op, shape, stride, dtype, layout_b) -> bool:
    a = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    if isinstance(layout_b, tuple):
        b = torch.empty_strided(layout_b[0], layout_b[1], dtype=layout_b[2], device="meta")
    else:
        b = layout_b(1)
    try:
        r = op(a, b)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return tuple(r.shape) == shape and r.dtype == dtype and r.stride() == stride


def simulate(gm: fx.GraphModule, x: torch.Tensor, steps: list[int], *, schedule: Schedule, dynamics: str,
             encoder: InputEncoder, chunk: int, batch_chunk: int | None = None,
             stats: bool = False, probe=None, tolerance: float | None = None,
             windows: dict[str, tuple[int, int]] | None = None) -> SimulationResult:
    """Simulate ``max(steps)`` steps of the converted graph on input ``x`` ``[B, ...]``.

    Samples are independent, so the batch is simulated ``batch_chunk`` samples at a time (all
    steps for one slice, then the next; None: the whole batch at once): the neuron states, which
    grow with the samples in flight, are then only that slice's, while folding ``chunk`` steps
    into each affine call keeps the calls as large as a whole batch's.

    ``probe(name, t0, out)``, when given, sees what each neuron layer passes downstream for steps
    ``t0 .. t0 + Tc - 1`` (``out`` is ``[Tc, b, ...]`` for the slice being simulated, read-only,
    valid only during the call): per-layer statistics use it. ``tolerance``: the sparse dynamics'
    silence band (a fraction of ``eta_t``); ``windows``: the steps ``(first, last)`` at which each neuron layer may
    spike (``signgd.windows.neuron_windows``)."""
    check_dynamics(schedule, dynamics)
    T = max(steps)
    batch = x.shape[0]
    batch_chunk = batch if batch_chunk is None else max(1, min(int(batch_chunk), batch))
    # One evaluation of the schedule for the whole run, so every chunking sees identical steps.
    etas = schedule.etas(1, T + 1, dtype=x.dtype, device=x.device)
    # an adaptive(start=) schedule whose early phase keeps the gain at 1, run no further than its start, is the
    # plain signGD neuron: its fused scan
    plain = schedule.rule is not None and schedule.rule.start >= T and schedule.rule.plain_early
    rule = None if plain else schedule.rule
    floors = None if rule is None else gain_floors(rule, 1, T + 1, dtype=x.dtype)
    interp = _ChunkInterpreter(gm, None)
    parts: list[dict[int, torch.Tensor]] = []
    spikes: dict[str, torch.Tensor] = {}
    neurons: dict[str, int] = {}
    with torch.inference_mode():
        for xb in x.split(batch_chunk):
            run = _Run(dynamics, xb.shape[0], stats, T, probe, rule, tolerance, windows)
            interp.sim = run
            parts.append(_simulate_slice(interp, xb, steps, etas, floors, chunk, encoder, OutputDecoder(dynamics)))
            for name, counts in run.spikes.items():
                spikes[name] = spikes[name] + counts if name in spikes else counts
            neurons.update(run.neurons)
        outputs = parts[0] if len(parts) == 1 else {t: torch.cat([p[t] for p in parts]) for t in parts[0]}
    return SimulationResult(outputs, spikes, neurons, batch)


def _simulate_slice(interp: _ChunkInterpreter, x: torch.Tensor, steps: list[int], etas: torch.Tensor, floors,
                    chunk: int, encoder: InputEncoder, decoder: OutputDecoder) -> dict[int, torch.Tensor]:
    """All steps for one slice of the batch, ``chunk`` steps per pass over the graph."""
    run, batch, T, wanted = interp.sim, x.shape[0], max(steps), set(steps)
    enc_state, dec_state = encoder.init_state(x), decoder.init_state()
    outputs: dict[int, torch.Tensor] = {}
    for t0 in range(1, T + 1, chunk):
        t1 = min(t0 + chunk, T + 1)
        run.etas = etas[t0 - 1:t1 - 1]
        run.floors = None if floors is None else floors[t0 - 1:t1 - 1]
        run.early = 0 if run.rule is None else min(t1 - t0, max(0, run.rule.start - t0 + 1))
        run.t0 = t0
        encoded = encoder.run(enc_state, x, run.etas, t0)
        readout = interp.run(encoded.reshape((t1 - t0) * batch, *x.shape[1:]))
        del encoded  # the graph may have written over it; nothing reads it again
        readout = readout.reshape(t1 - t0, batch, *readout.shape[1:])
        decoded = decoder.run(dec_state, readout, run.etas)
        for t in range(t0, t1):
            if t in wanted:
                outputs[t] = decoded[t - t0].clone()
    return outputs
