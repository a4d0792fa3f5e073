"""How torch spells each op: the one table that the graph passes, the simulator, the energy count
and save/load read. Adding an op is adding its spellings here.

An fx node says what it computes in one of three ways: a submodule (``call_module``: matched by its
class), a function (``call_function``: the callable itself, ``torch.add``, ``operator.add``,
``F.relu``) or a tensor method (``call_method``: its name, ``"add_"``). Each category below lists
its ``*_MODULES`` (classes), ``*_FUNCTIONS`` (callables) and ``*_METHODS`` (names); the readers
keep only their rules (which operand may depend on the input, which arguments to read):

==========================  ====================================================================
category                    read by
==========================  ====================================================================
neuron targets              ``graph/neuronize.py`` (``match``), ``graph/check.py`` (the names
                            in its message), ``snnfile.py`` (the functions a file may call)
affine modules              ``graph/check.py``, ``graph/fold_bn.py``, ``costs/synapses.py``,
                            ``snnfile.py`` (the module classes a file may hold); functional batch
                            norms: ``graph/batchnorm_calls.py``
affine functions, methods   ``graph/check.py``, ``costs/synapses.py``, ``report/event_count.py``,
                            ``snnfile.py``
products and ratios         ``graph/check.py`` (scalings), ``graph/products.py`` (two
                            activations: a 2-input neuron), ``costs/synapses.py``
in-place spellings          ``graph/neuronize.py``, ``graph/products.py``, ``simulator.py``
identities, shape checks    ``graph/simplify.py``
pooling, norms, attention   ``graph/maxpool.py``, ``graph/max_reduce.py``, ``graph/norms.py``,
                            ``graph/vector_norms.py``, ``graph/attention.py``, ``graph/swin.py``;
                            ``graph/check.py`` (a decomposable op left behind, a recurrent layer)
constants                   ``snnfile.py``
==========================  ====================================================================

The math of the neuron targets (the exact function, its arity) is ``signgd.targets``; this module
says only which torch spellings reach which target. Where the readers of a category do not agree
yet, the difference is written out at the category rather than spread over the readers.
"""
from __future__ import annotations

import math
import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..targets import divide_sqrt
from . import ops

# ---- neuron targets ----------------------------------------------------------------------------
# A function or method spelling: (target name, the target's parameters after its inputs as
# (name, default), in the order the torch function takes them), so ``F.leaky_relu(x, 0.2)`` and
# ``nn.LeakyReLU(0.2)`` both become ``leaky_relu`` with ``negative_slope=0.2``. A module spelling
# reads the parameters from the module.
Spelling = tuple[str, tuple[tuple[str, object], ...]]
_NONE: tuple = ()

NEURON_MODULES: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {
    nn.ReLU: ("relu", lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope)}),
    nn.GELU: ("gelu", lambda m: {"approximate": m.approximate}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.Hardswish: ("hardswish", lambda m: {}),
    nn.Hardsigmoid: ("hardsigmoid", lambda m: {}),
    nn.ReLU6: ("hardtanh", lambda m: {"min_val": 0.0, "max_val": 6.0}),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha)}),
    nn.Softplus: ("softplus", lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)}),
    nn.Mish: ("mish", lambda m: {}),
}
NEURON_FUNCTIONS: dict[object, Spelling] = {
    F.relu: ("relu", _NONE), torch.relu: ("relu", _NONE), torch.relu_: ("relu", _NONE), F.relu_: ("relu", _NONE),
    F.leaky_relu: ("leaky_relu", (("negative_slope", 0.01),)),
    F.leaky_relu_: ("leaky_relu", (("negative_slope", 0.01),)),
    F.gelu: ("gelu", (("approximate", "none"),)),
    F.silu: ("silu", _NONE),
    torch.sigmoid: ("sigmoid", _NONE), F.sigmoid: ("sigmoid", _NONE),
    torch.tanh: ("tanh", _NONE), F.tanh: ("tanh", _NONE),
    F.hardswish: ("hardswish", _NONE),
    F.hardsigmoid: ("hardsigmoid", _NONE),
    F.relu6: ("hardtanh", (("min_val", 0.0), ("max_val", 6.0))),
    F.hardtanh: ("hardtanh", (("min_val", -1.0), ("max_val", 1.0))),
    F.elu: ("elu", (("alpha", 1.0),)),
    F.softplus: ("softplus", (("beta", 1.0), ("threshold", 20.0))),
    F.mish: ("mish", _NONE),
    torch.abs: ("abs", _NONE), operator.abs: ("abs", _NONE),
    torch.square: ("square", _NONE),
    torch.exp: ("exp", _NONE),
    torch.sqrt: ("sqrt", _NONE),
    divide_sqrt: ("divide_sqrt", (("eps", 1e-5),)),
}
# Functions whose parameters are always the listed defaults (``F.relu6``'s second argument is
# ``inplace``, not a bound).
FIXED_PARAMETER_FUNCTIONS = {F.relu6}
NEURON_METHODS: dict[str, Spelling] = {
    "relu": ("relu", _NONE), "relu_": ("relu", _NONE),
    "sigmoid": ("sigmoid", _NONE), "sigmoid_": ("sigmoid", _NONE),
    "tanh": ("tanh", _NONE), "tanh_": ("tanh", _NONE),
    "abs": ("abs", _NONE), "abs_": ("abs", _NONE),
    "square": ("square", _NONE), "square_": ("square", _NONE),
    "exp": ("exp", _NONE), "exp_": ("exp", _NONE),
    "sqrt": ("sqrt", _NONE), "sqrt_": ("sqrt", _NONE),
}
# ``x ** 2`` and ``x.pow(2)``: a ``square`` neuron when the exponent is the constant 2.
SQUARE_POWER_FUNCTIONS = {operator.pow}
SQUARE_POWER_METHODS = {"pow", "pow_"}
# What the decomposition passes turn into neurons (for the listing of supported names).
DECOMPOSED_NAMES = ["MaxPool1d/2d, amax / max(dim) / maximum (max neurons)",
                    "LayerNorm/RMSNorm/GroupNorm (square + divide_sqrt neurons)",
                    "F.normalize, .norm() with p=2 (square, divide_sqrt, sqrt neurons)",
                    "softmax / attention (exp, divide, matmul neurons)",
                    "products of two activations (mul, matmul, einsum, divide neurons)"]

# ---- affine modules ------------------------------------------------------------------------------
CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_MODULES = (nn.Linear,)
BATCH_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ANY_BATCH_NORM = nn.modules.batchnorm._BatchNorm  # the base class: every BatchNorm, for isinstance
# Functional batch norms (timm's BatchNormAct2d): their argument names in positional order, and the
# defaults. In eval mode ``graph/batchnorm_calls.py`` makes each a BatchNorm module (then folded).
BATCH_NORM_FUNCTIONS = {
    F.batch_norm: (("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                   {"training": False, "eps": 1e-5}),
    torch.batch_norm: (("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
                        "cudnn_enabled"), {}),
}
AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d)
ADAPTIVE_AVG_POOL_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
               nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
               nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)
SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle,
                 nn.ChannelShuffle) + PAD_MODULES
# Resampling and patch extraction: fixed linear maps of the input (every interpolation mode weighs
# input values by coefficients that depend on the geometry only; Fold sums overlapping patches).
RESAMPLE_MODULES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.Unfold, nn.Fold)
AFFINE_MODULES = (CONV_MODULES + LINEAR_MODULES + BATCH_NORM_MODULES + AVG_POOL_MODULES
                  + ADAPTIVE_AVG_POOL_MODULES + SHAPE_MODULES + RESAMPLE_MODULES)

# ---- affine functions and methods ----------------------------------------------------------------
CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
LINEAR_FUNCTIONS = {F.linear}
AVG_POOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, torch.avg_pool1d}
ADAPTIVE_AVG_POOL_FUNCTIONS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, torch.adaptive_avg_pool1d}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}
SUBTRACT_FUNCTIONS = {operator.sub, operator.isub, torch.sub}
SUBTRACT_METHODS = {"sub", "sub_"}
NEGATE_FUNCTIONS = {operator.neg, torch.neg}
NEGATE_METHODS = {"neg"}
MEAN_FUNCTIONS = {torch.mean}
MEAN_METHODS = {"mean"}
SUM_FUNCTIONS = {torch.sum}
SUM_METHODS = {"sum"}
# Reshaping, selecting and joining: values move, none is computed.
SHAPE_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack, torch.permute,
    torch.transpose, torch.squeeze, torch.unsqueeze, torch.narrow, torch.chunk, torch.split, torch.unbind,
    torch.unflatten, torch.movedim, torch.flip, torch.roll, torch.tile, torch.select, torch.swapaxes,
    torch.swapdims, torch.moveaxis, torch.repeat_interleave, F.pixel_shuffle, F.pixel_unshuffle,
    torch.pixel_shuffle, torch.pixel_unshuffle, torch.channel_shuffle, torch.t, torch.hstack, torch.vstack,
}
RESAMPLE_FUNCTIONS = {F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear, F.unfold, F.fold}
SHAPE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "expand",
    "expand_as", "chunk", "split", "size", "dim", "narrow", "repeat", "unfold", "__getitem__", "unbind",
    "unflatten", "movedim", "flip", "roll", "tile", "select", "swapaxes", "swapdims", "moveaxis", "reshape_as",
    "view_as", "repeat_interleave", "t",
}
FLOAT_CAST_METHODS = {"float", "double"}
CAST_METHODS = {"to", "type_as", "type"}  # affine only when the result stays floating point
# Padding in every mode is affine: each output is an input value (reflect, replicate, circular) or
# the constant (constant mode): timm's BlurPool2d pads with reflect.
PAD_FUNCTIONS = {F.pad}
# The helpers the passes insert (``graph/ops.py``): each is affine in its tensor input.
GRAPH_HELPER_FUNCTIONS = {ops.pool_windows, ops.window_slice, ops.squeeze_last, ops.attention_bias, ops.assign}
# F.conv3d / torch.conv3d are not accepted yet (nn.Conv3d is); the energy count knows them.
AFFINE_FUNCTIONS = (
    ADD_FUNCTIONS | SUBTRACT_FUNCTIONS | NEGATE_FUNCTIONS | {operator.pos} | MEAN_FUNCTIONS | SUM_FUNCTIONS
    | SHAPE_FUNCTIONS | LINEAR_FUNCTIONS | {f for f, nd in CONV_FUNCTIONS.items() if nd < 3}
    | AVG_POOL_FUNCTIONS | ADAPTIVE_AVG_POOL_FUNCTIONS | GRAPH_HELPER_FUNCTIONS | RESAMPLE_FUNCTIONS | PAD_FUNCTIONS
)
AFFINE_METHODS = (ADD_METHODS | SUBTRACT_METHODS | NEGATE_METHODS | MEAN_METHODS | SUM_METHODS | SHAPE_METHODS
                  | FLOAT_CAST_METHODS)

# ---- products and ratios ---------------------------------------------------------------------------
# Affine when at most one operand is an activation (a scaling by a constant; for a division only
# the numerator, without a rounding mode); a product of two activations is a 2-input neuron.
MULTIPLY_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
MULTIPLY_METHODS = {"mul", "mul_"}
DIVIDE_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div}
DIVIDE_METHODS = {"div", "div_"}
MATMUL_FUNCTIONS = {operator.matmul, torch.matmul}
MATMUL_METHODS = {"matmul"}
BATCHED_MATMUL_FUNCTIONS = {torch.bmm}  # a scaling by a constant for the check and the energy count
SCALING_FUNCTIONS = MULTIPLY_FUNCTIONS | DIVIDE_FUNCTIONS | MATMUL_FUNCTIONS | BATCHED_MATMUL_FUNCTIONS
SCALING_METHODS = MULTIPLY_METHODS | DIVIDE_METHODS | MATMUL_METHODS
DIVISIONS = DIVIDE_FUNCTIONS | DIVIDE_METHODS
# The function each scaling method computes (the energy count replays it with 1[c != 0]).
SCALING_METHOD_FUNCTIONS = {"mul": torch.mul, "mul_": torch.mul, "div": torch.div, "div_": torch.div,
                            "matmul": torch.matmul}
# ``torch.einsum(equation, *operands)``: affine while at most one operand is an activation; two
# activations become an ``einsum`` neuron (``graph/products.py``).
EINSUM_FUNCTIONS = {torch.einsum}
# input + (product of two factors): affine while at most one factor (the argument positions) is
# an activation.
ADD_PRODUCT_FUNCTIONS = {torch.addcmul: (1, 2), torch.addmm: (1, 2), torch.baddbmm: (1, 2), torch.addbmm: (1, 2)}
# Spelling (function or method name) -> the 2-input neuron target of a product of two activations.
# ``torch.true_divide`` and the ``bmm`` method become neurons but are not accepted as scalings yet.
PRODUCT_TARGETS: dict[object, str] = {
    **dict.fromkeys(MULTIPLY_FUNCTIONS | MULTIPLY_METHODS, "mul"),
    **dict.fromkeys(MATMUL_FUNCTIONS | BATCHED_MATMUL_FUNCTIONS | MATMUL_METHODS | {"bmm"}, "matmul"),
    **dict.fromkeys(DIVIDE_FUNCTIONS | DIVIDE_METHODS | {torch.true_divide, "true_divide"}, "divide"),
}

# ---- in-place spellings ------------------------------------------------------------------------------
INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
# Element-wise affine ops -> their in-place form (may write the result over the first operand) and
# their ``out=`` form (may write it into a given buffer): the same kernels as the plain op.
ELEMENTWISE_INPLACE = {operator.add: torch.Tensor.add_, operator.sub: torch.Tensor.sub_,
                       operator.mul: torch.Tensor.mul_, operator.truediv: torch.Tensor.div_}
ELEMENTWISE_OUT = {operator.add: torch.add, operator.sub: torch.sub, operator.mul: torch.mul,
                   operator.truediv: torch.div}


def is_inplace(target) -> bool:
    """Whether a function or method spelling writes over its first input (``relu_``, ``x += y``)."""
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or target in INPLACE_OPERATORS


# ---- identities and shape checks (the identity in eval mode; removed before conversion) --------------
IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout, F.alpha_dropout}
IDENTITY_METHODS = {"clone", "detach"}
STOCHASTIC_DEPTH = "stochastic_depth"  # torchvision.ops.stochastic_depth, by name (torchvision is optional)
ASSERT_FUNCTIONS = {torch._assert}
# Pure operations on shapes and other plain values: dropped once nothing uses their result.
SHAPE_ARITHMETIC_FUNCTIONS = {getattr, operator.getitem, operator.eq, operator.ne, operator.lt, operator.le,
                              operator.gt, operator.ge, operator.and_, operator.or_, operator.not_,
                              operator.floordiv, operator.mul, operator.add, operator.sub, operator.mod}
SHAPE_ARITHMETIC_METHODS = {"size", "dim"}

# ---- pooling, norms, attention (decomposed into affine ops and neurons) -------------------------------
MAX_POOL_MODULES = {nn.MaxPool1d: 1, nn.MaxPool2d: 2}  # class -> spatial dimensions
MAX_POOL_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, torch.max_pool1d: 1, torch.max_pool2d: 2}
# Maxima over dims (-> whether the call returns (values, indices)) and element-wise maxima of two
# tensors: trees of 2-input max neurons (``graph/max_reduce.py``).
MAX_REDUCE_FUNCTIONS = {torch.amax: False, torch.max: True}
MAX_REDUCE_METHODS = {"amax": False, "max": True}
ELEMENTWISE_MAX_FUNCTIONS = {torch.maximum}
LAYER_NORM_MODULES = (nn.LayerNorm,)
LAYER_NORM_FUNCTIONS = {F.layer_norm, torch.layer_norm}
RMS_NORM_MODULES = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()  # torch >= 2.4
RMS_NORM_FUNCTIONS = {getattr(F, "rms_norm", None), getattr(torch, "rms_norm", None)} - {None}
GROUP_NORM_MODULES = (nn.GroupNorm,)
GROUP_NORM_FUNCTIONS = {F.group_norm, torch.group_norm}
# 2-norms over given dims: F.normalize (x / max(||x||, eps)) and .norm() (sqrt of a sum of squares),
# decomposed by ``graph/vector_norms.py``. Argument names in positional order, with defaults.
NORMALIZE_FUNCTIONS = {F.normalize: (("input", "p", "dim", "eps"), {"p": 2.0, "dim": 1, "eps": 1e-12})}
VECTOR_NORM_FUNCTIONS = {
    torch.norm: (("input", "p", "dim", "keepdim"), {"p": "fro", "dim": None, "keepdim": False}),
    torch.linalg.vector_norm: (("x", "ord", "dim", "keepdim"), {"ord": 2, "dim": None, "keepdim": False}),
    torch.linalg.norm: (("A", "ord", "dim", "keepdim"), {"ord": None, "dim": None, "keepdim": False}),
}
VECTOR_NORM_METHODS = {"norm": (("self", "p", "dim", "keepdim"), {"p": "fro", "dim": None, "keepdim": False})}
SOFTMAX_MODULES = (nn.Softmax,)  # the exact class (a subclass may compute something else)
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax}
SOFTMAX_METHODS = {"softmax"}
ATTENTION_FUNCTIONS = {F.scaled_dot_product_attention}
# torchvision Swin's fx-wrapped functions, by qualified name (torchvision is optional): written out
# as plain ops by ``graph/swin.py``.
SWIN_FUNCTIONS = {"torchvision.models.swin_transformer.shifted_window_attention": "attention",
                  "torchvision.models.swin_transformer._patch_merging_pad": "merge"}
# Every spelling a decomposition pass rewrites (one left at the check was called in a way its pass
# has no rule for, and the check says so instead of listing it as unsupported).
DECOMPOSED_MODULES = (tuple(MAX_POOL_MODULES) + LAYER_NORM_MODULES + RMS_NORM_MODULES + GROUP_NORM_MODULES
                      + SOFTMAX_MODULES)
DECOMPOSED_FUNCTIONS = (set(MAX_POOL_FUNCTIONS) | LAYER_NORM_FUNCTIONS | RMS_NORM_FUNCTIONS | GROUP_NORM_FUNCTIONS
                        | SOFTMAX_FUNCTIONS | ATTENTION_FUNCTIONS | set(NORMALIZE_FUNCTIONS)
                        | set(VECTOR_NORM_FUNCTIONS) | set(MAX_REDUCE_FUNCTIONS) | ELEMENTWISE_MAX_FUNCTIONS)
DECOMPOSED_METHODS = SOFTMAX_METHODS | set(VECTOR_NORM_METHODS) | set(MAX_REDUCE_METHODS)

# ---- refused with a reason ---------------------------------------------------------------------------
RECURRENT_MODULES = (nn.RNNBase, nn.RNNCellBase)  # RNN, LSTM, GRU and their cells
RECURRENT_WHY = ("a recurrent layer has no spiking equivalent in signgd (its state loops over the sequence "
                 "inside one call, which is neither a neuron nor an affine map); replace it, e.g. by "
                 "attention or convolution over the sequence")

# ---- constants ---------------------------------------------------------------------------------------
# Functions a converted graph may apply to constants and shapes (never to activations: the check
# refuses them there); a saved network may call them.
CONSTANT_FUNCTIONS = {
    F.pad, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.pow, operator.matmul,
    operator.neg, operator.pos, operator.invert, operator.and_, operator.or_, operator.xor, operator.eq,
    operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.ones, torch.zeros, torch.full, torch.ones_like, torch.zeros_like, torch.full_like, torch.arange,
    torch.tensor, torch.as_tensor, torch.sqrt, torch.rsqrt, torch.exp, torch.abs, torch.clamp, torch.where,
    torch.maximum, torch.minimum, math.sqrt, math.prod, math.ceil, math.floor,
}
# Every function a saved network may call: what the check accepts, the neuron targets' spellings
# and the constants above.
SAVABLE_FUNCTIONS = (AFFINE_FUNCTIONS | SCALING_FUNCTIONS | set(ADD_PRODUCT_FUNCTIONS) | CONSTANT_FUNCTIONS
                     | set(NEURON_FUNCTIONS) | GRAPH_HELPER_FUNCTIONS | EINSUM_FUNCTIONS)


def supported_names() -> list[str]:
    """Human-readable list of the nonlinearities that become neurons (for error messages)."""
    names = {c.__name__ for c in NEURON_MODULES}
    for f in NEURON_FUNCTIONS:
        name = getattr(f, "__name__", None)
        if name and f is not divide_sqrt:
            names.add(f"F.{name}" if getattr(F, name, None) is f else f"torch.{name}")
    return sorted(names) + DECOMPOSED_NAMES


def function_name(fn) -> str:
    """``module.name`` of a function, for messages."""
    mod = getattr(fn, "__module__", None) or ""
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")
