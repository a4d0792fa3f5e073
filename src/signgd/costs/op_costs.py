"""What each neuron costs to compute: one table, used for the SNN's neurons and the ANN's nonlinearities.

Two kinds of operation are counted, as in the 45 nm figures the energy uses:

- an **AC** (accumulate): one floating-point addition, subtraction, comparison or max;
- a **MAC** (multiply-accumulate): one multiplication, with or without the addition after it.

A transcendental function (exp, log, erf, tanh, a reciprocal, a reciprocal square root) counts as
``FUNCTION_MACS`` MACs: a range-reduced polynomial or a few Newton steps, as a digital core computes
it. The table gives the cost of evaluating a target once per output element, ``(ACs, MACs)``; the
2-input targets whose cost depends on shapes (``matmul``: K MACs per output, ``divide_sqrt``: the
reciprocal square root once per element of its variance input) are priced by ``target_cost``.

On top of evaluating its target, a signGD neuron works at every step (``SIGNGD_STEP``): it compares its
estimate with the target (1 AC) and moves it (1 AC); a normalized neuron multiplies its target by
``1 / scale`` (1 MAC); an adaptive neuron also updates its gain (1 AC to compare its spike with the
last one, 1 MAC to scale the gain) and multiplies its step by it (1 MAC); with power-of-two steps
(``adaptive(pow2=True)``) it also rounds its gain (1 AC) and the step's multiply is an exponent add (1 AC),
as is the gain's when ``grow`` and ``shrink`` are powers of two (``adaptive_step``). Each element of a
neuron's input integrates what arrives: ``x += eta_t * (c - 2 * acc)`` for the binary neuron (the
drift ``c`` of the senders that did not spike is a constant of the receiver: 1 AC, 1 MAC),
``x += eta_t * acc`` for adaptive senders (1 MAC), each synapse of which multiplies by the sender's gain (a
MAC per synapse, ``costs.synapses``). The integrate-and-fire (subgradient) neuron
averages its input (1 AC, 1 MAC), compares (1 AC) and averages its spikes (1 AC, 1 MAC); the classic
IF neuron (``dynamics="if"``) integrates, compares and subtracts its threshold (3 AC); the input of
either adds the bias to what arrived (1 AC). The signGD readout integrates like a neuron's input; the
subgradient decoder averages (1 AC, 1 MAC).

Two static factors cost nothing. A normalized neuron whose target is positively homogeneous
(``HOMOGENEOUS``: relu, leaky_relu, abs, max: ``f(x) / s = f(x / s)``) has ``1 / s`` folded into the
weights of the synapses that reach its input, as a sender's static scale is: no ``NORMALIZE``. And a
schedule whose steps are powers of two (``exponential(pow2=True)``, ``adaptive(pow2=True)``) makes every
scaling by ``eta_t`` an add to the exponent: the receive rules' MAC is then counted as an AC (``receive``):
a multiply by a power of two, with or without the add after it, is one AC. With ``adaptive(pow2=True)``
the same rule makes each synapse's multiply by the sender's step ``+-2**k`` an AC (its change is priced as
an event, ``costs.counting.kinds``).

The sparse neuron (``dynamics="sparse"``) works on events: only when one of its inputs changed does it
evaluate its target again, normalize it and take the new gap ``d = f(x) - y`` (target cost + ``NORMALIZE``
+ ``SPARSE_EVALUATE``, 1 AC); it compares its gap with ``tolerance * eta_t`` (``SPARSE_CHECK``, 1 AC: the
threshold is one number per step for the whole network) only when the gap or the threshold changed
since it last compared (its target was evaluated again, it spiked at the step before, or the schedule's
step changed: ``costs.changed.checked_mask``; a neuron with neither found itself inside the band and
stays silent without looking); when it fires it moves its estimate and its gap (``SPARSE_SPIKE``, 2 AC);
each of its input elements that received something integrates it, ``x += eta_t * acc``
(``RECEIVE_SPARSE``, 1 AC + 1 MAC), and so does each readout element. The graded neuron
(``dynamics="graded"``) works on the same events; its spike also takes the exponent of its gap (an integer
operation on its bits) before moving its estimate and gap by that power of two (``GRADED_SPIKE``, 3 AC), and
its spike arrives already scaled (a synapse multiplies its weight by the power of two it carries: an
exponent add, an AC, ``costs.synapses``), so a receiving element only adds what arrived, ``x += acc``
(``RECEIVE_GRADED``, 1 AC). The input encoders: ``float``
moves its estimate toward the input (1 AC, 1 MAC per element per step), ``spike`` compares and moves
(2 AC), ``stochastic`` also draws its noise (a hash and a sigmoid: 2 AC + the sigmoid's cost), ``analog`` costs nothing.
"""
from __future__ import annotations

import math

__all__ = ["FUNCTION_MACS", "TARGET_COSTS", "target_cost", "SIGNGD_STEP", "NORMALIZE", "ADAPTIVE_STEP",
           "ADAPTIVE_STEP_POW2", "adaptive_step",
           "RECEIVE_BINARY", "RECEIVE_ADAPTIVE", "SUBGRADIENT_STEP", "IF_STEP", "RECEIVE_SUBGRADIENT",
           "DECODE_SUBGRADIENT", "HOMOGENEOUS", "normalize_cost", "receive",
           "SPARSE_CHECK", "SPARSE_EVALUATE", "SPARSE_SPIKE", "RECEIVE_SPARSE", "GRADED_SPIKE", "RECEIVE_GRADED",
           "ENCODER_STEP"]

FUNCTION_MACS = 4
_F = FUNCTION_MACS

# target -> (ACs, MACs) per output element, and why.
TARGET_COSTS: dict[str, tuple[int, int, str]] = {
    "relu": (1, 0, "max(x, 0): one comparison"),
    "abs": (1, 0, "one comparison (sign)"),
    "max": (1, 0, "max(a, b): one comparison"),
    "hardtanh": (2, 0, "clamp: two comparisons"),
    "leaky_relu": (1, 1, "a comparison and a multiply by the slope"),
    "square": (0, 1, "x * x"),
    "mul": (0, 1, "a * b"),
    "exp": (0, _F, "a function"),
    "tanh": (0, _F, "a function"),
    "sqrt": (1, _F, "a floor at 0 and a function"),
    "sigmoid": (1, 2 * _F, "exp, an add, a reciprocal"),
    "gelu": (1, _F + 3, "x/sqrt(2), erf (a function), an add, two multiplies"),
    "silu": (1, 2 * _F + 1, "sigmoid, a multiply"),
    "hardswish": (3, 2, "an add, a clamp (two comparisons), two multiplies"),
    "hardsigmoid": (3, 1, "an add, a clamp (two comparisons), a multiply"),
    "elu": (2, _F + 1, "a comparison, exp, a subtraction, a multiply by alpha"),
    "softplus": (1, 2 * _F + 2, "exp, an add, log, two multiplies by beta"),
    "mish": (1, 3 * _F + 3, "softplus, tanh, a multiply"),
    "divide": (0, _F + 1, "a reciprocal and a multiply"),
    "divide_sqrt": (0, 1, "c * r: a multiply per output, plus per variance element a floor (1 AC) "
                          "and a reciprocal square root (a function)"),
    "matmul": (0, 1, "K multiply-accumulates per output element (K: the inner dimension)"),
    "einsum": (0, 1, "K multiply-accumulates per output element (K: the product of the contracted sizes)"),
}

SIGNGD_STEP = (2, 0)  # compare the estimate with the target, move it
NORMALIZE = (0, 1)  # multiply the target by 1 / scale
ADAPTIVE_STEP = (1, 2)  # compare the spike with the last, scale the gain, scale the step by it
# adaptive(pow2=True): compare the spike with the last, scale the gain (kept exact: a multiply), round it to
# a power of two (compare its mantissa), scale the step by it (an exponent add)
ADAPTIVE_STEP_POW2 = (3, 1)
RECEIVE_BINARY = (1, 1)  # x += eta_t * (c - 2 * acc)
RECEIVE_ADAPTIVE = (0, 1)  # x += eta_t * acc
SUBGRADIENT_STEP = (3, 2)  # average the input, compare, average the spikes
IF_STEP = (3, 0)  # integrate-and-fire (dynamics="if"): integrate, compare, subtract the threshold
RECEIVE_SUBGRADIENT = (1, 0)  # the bias added to what arrived
DECODE_SUBGRADIENT = (1, 1)  # the output's running average
SPARSE_CHECK = (1, 0)  # per check (costs.changed.checked_mask): |f(x) - y| against tolerance * eta_t
SPARSE_EVALUATE = (1, 0)  # after its target was evaluated again: the new gap f(x) - y
SPARSE_SPIKE = (2, 0)  # per spike: y +- eta_t, and the gap with it
RECEIVE_SPARSE = (1, 1)  # per input element that received something: x += eta_t * acc
GRADED_SPIKE = (3, 0)  # per graded spike: the exponent of the gap, y += 2**k, and the gap with it
RECEIVE_GRADED = (1, 0)  # per input element that received graded spikes: x += acc (already scaled)
ENCODER_STEP = {"float": (1, 1), "spike": (2, 0), "stochastic": (3, 2 * _F), "analog": (0, 0)}


HOMOGENEOUS = frozenset({"relu", "leaky_relu", "abs", "max"})


def normalize_cost(target: str, normalized: bool) -> tuple[int, int]:
    """What dividing the target by the neuron's scale costs per evaluation: nothing when it is not
    normalized or when ``1 / scale`` folds into the weights (``HOMOGENEOUS``), else ``NORMALIZE``."""
    return (0, 0) if not normalized or target in HOMOGENEOUS else NORMALIZE


def receive(cost: tuple[int, int], pow2: bool) -> tuple[int, int]:
    """A receive rule's cost with power-of-two steps: the multiply by ``eta_t`` is an exponent add (an AC)."""
    return (cost[0] + cost[1], 0) if pow2 else cost


def adaptive_step(rule) -> tuple[int, int]:
    """What an adaptive neuron pays per step for its gain (``rule``: its schedule's ``schedules.Rule``):
    ``ADAPTIVE_STEP``, or with power-of-two steps ``ADAPTIVE_STEP_POW2``, whose multiply of the gain by
    ``grow`` or ``shrink`` is an exponent add too (an AC) when both are powers of two."""
    if not rule.pow2:
        return ADAPTIVE_STEP
    exact = all(math.frexp(float(v))[0] == 0.5 for v in (rule.grow, rule.shrink))
    return receive(ADAPTIVE_STEP_POW2, exact)


def target_cost(target: str, output_elements: int, input_shapes: list[tuple[int, ...]],
                params: dict | None = None) -> tuple[int, int]:
    """``(ACs, MACs)`` of evaluating ``target`` once on one sample: ``output_elements`` outputs from
    inputs of the given per-sample shapes (``params``: the neuron's, for an einsum's equation)."""
    if target not in TARGET_COSTS:
        raise KeyError(f"no cost for the neuron target {target!r}; add it to signgd.costs.op_costs.TARGET_COSTS")
    ac, mac, _ = TARGET_COSTS[target]
    if target == "matmul":
        k = input_shapes[0][-1] if input_shapes and input_shapes[0] else 1
        return 0, output_elements * k
    if target == "einsum":
        return 0, output_elements * _contracted(params["equation"], input_shapes)
    if target == "divide_sqrt":
        variance = math.prod(input_shapes[1]) if len(input_shapes) > 1 else output_elements
        return variance, output_elements + variance * FUNCTION_MACS
    return ac * output_elements, mac * output_elements


def _contracted(equation: str, shapes: list[tuple[int, ...]]) -> int:
    """The product of the sizes an einsum sums over (indices of the inputs missing from the output);
    the equation's ``...`` covers the leading dims, so each operand's letters align to its last dims."""
    inputs, _, output = equation.replace(" ", "").partition("->")
    sizes: dict[str, int] = {}
    for letters, shape in zip(inputs.split(","), shapes):
        letters = letters.replace("...", "")
        for letter, size in zip(reversed(letters), reversed(shape)):
            sizes[letter] = size
    return math.prod(size for letter, size in sizes.items() if letter not in output)
