"""The network file format, and writing it: ``snn.save(path)`` (``signgd.serialize`` reads it back).

A file is a ``torch.save``d dict of plain containers (dict, list, str, int, float, bool, None) and
tensors, read back with ``torch.load(..., weights_only=True)``: the unpickler builds no object other
than those, so a crafted file cannot run code while it is read. The graph is stored as a list of
node records; what a record names is resolved only through allowlists, never by importing:

- ``call_function``: the functions a converted graph may hold (``graph/spellings.py``'s
  SAVABLE_FUNCTIONS: the affine functions ``graph/check.py`` accepts, the helpers of ``graph/ops.py``,
  the neuron targets' torch spellings, a few pure torch, ``operator`` and ``math`` functions), each
  stored under a fixed name such as ``torch.flatten``.
  Saving a graph that holds any other function fails at save time, so every saved file loads.
- ``call_method``: names of ``torch.Tensor`` methods, no private or dunder names except the
  arithmetic ones fx records, and none of the few that leave the tensor world (storage, hooks...).
- ``call_module``: ``SpikingNeuron`` (rebuilt from its target name, plain params and buffers, so new
  targets need nothing here) and the affine ``torch.nn`` classes of ``graph/spellings.py`` (rebuilt
  from their plain attributes and tensors, without calling ``__init__``).

Names are code too: torch.fx writes node names, placeholder and module/attribute paths and keyword
names verbatim into the Python source it compiles for the graph, so every such string must be a
plain name (ASCII letters, digits, ``_``; no leading ``__``) before the graph is built, at save time
and at load time (a file with ``x=__import__('os').system(...)`` as an input name is refused).
"""
from __future__ import annotations

import builtins
import keyword
import math
import operator
import os
import re
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import targets
from .errors import SigngdError
from .graph import ops, spellings
from .neurons import SpikingNeuron
from .schedules import make_schedule
from .version import __version__

__all__ = ["FORMAT", "FORMAT_VERSION", "SnnFileError", "FUNCTIONS", "MODULE_CLASSES", "NEURON_CLASS",
           "MODULE_INTERNALS", "method_allowed", "plain_path", "check_node_names", "decode", "to_payload", "save"]

FORMAT = "signgd.SpikingNetwork"
FORMAT_VERSION = 1


class SnnFileError(SigngdError, ValueError):
    """A saved network cannot be written or read: missing, truncated, newer, unsafe or inconsistent."""


# ---- allowlists ---------------------------------------------------------------------------------
_NAMESPACES = (("torch", torch), ("torch.nn.functional", F), ("operator", operator), ("math", math),
               ("signgd.graph.ops", ops), ("signgd.targets", targets))


def _allowed_functions() -> dict[str, object]:
    """Fixed name -> function for every function a saved graph may call (built once, at import):
    ``graph/spellings.py``'s SAVABLE_FUNCTIONS, each under its public name in the first namespace
    that holds it."""
    table: dict[str, object] = {"builtins.getattr": builtins.getattr}
    for fn in spellings.SAVABLE_FUNCTIONS:
        for ns_name, ns in _NAMESPACES:
            name = next((k for k, v in vars(ns).items() if v is fn and not k.startswith("_")), None)
            if name is not None:
                table.setdefault(f"{ns_name}.{name}", fn)
                break
    return table


FUNCTIONS = _allowed_functions()
_FUNCTION_NAMES = {id(fn): name for name, fn in FUNCTIONS.items()}

# Tensor methods that hand out memory, hooks or callables: never needed by a converted graph.
_DENIED_METHODS = {"storage", "untyped_storage", "data_ptr", "numpy", "register_hook", "apply_", "map_",
                   "map2_", "backward", "share_memory_", "pin_memory", "record_stream", "set_",
                   "register_post_accumulate_grad_hook", "tolist", "item"}
_DUNDER_METHODS = {"__getitem__", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
                   "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__",
                   "__neg__", "__pos__", "__matmul__", "__rmatmul__"}

MODULE_CLASSES = {f"torch.nn.{c.__name__}": c for c in spellings.AFFINE_MODULES}
_MODULE_CLASS_NAMES = {c: name for name, c in MODULE_CLASSES.items()}
NEURON_CLASS = "signgd.SpikingNeuron"
# Attributes every nn.Module has: rebuilt by nn.Module.__init__, never read from a file.
MODULE_INTERNALS = set(vars(nn.Module()))
_NEURON_DERIVED = {"_spec", "target", "params"}


PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


def _plain_name(name, what: str, identifier: bool = False) -> str:
    """``name`` when torch.fx may write it into generated source as it is: ASCII letters, digits and
    ``_``, no leading ``__`` (and a Python identifier, not a keyword, where fx needs one)."""
    ok = isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None and not name.startswith("__")
    if ok and identifier:
        ok = name.isidentifier() and not keyword.iskeyword(name)
    if not ok:
        raise SnnFileError(f"{what} {name!r:.80} is not a plain name (letters, digits, _); a network file "
                           f"holds only plain names (refused without running anything)")
    return name


def plain_path(path, what: str) -> str:
    """A dotted path of plain names (a module or attribute of the graph)."""
    if not isinstance(path, str):
        raise SnnFileError(f"{what} {path!r:.80} is not a dotted name")
    for part in path.split("."):
        _plain_name(part, what)
    return path


def check_node_names(op, name, target, kwargs, where: str) -> None:
    """Every string of a node that fx writes into generated source verbatim (save and load)."""
    _plain_name(name, f"{where}: node name")
    if op == "placeholder":
        _plain_name(target, f"{where}: input name", identifier=True)
    elif op in ("get_attr", "call_module"):
        plain_path(target, f"{where}: target")
    for key in kwargs:
        _plain_name(key, f"{where}: keyword", identifier=True)


def method_allowed(name) -> bool:
    if not isinstance(name, str) or name in _DENIED_METHODS:
        return False
    if name.startswith("_"):
        return name in _DUNDER_METHODS
    return hasattr(torch.Tensor, name)


# ---- plain-value encoding ---------------------------------------------------------------------
def _encode(v, where: str):
    """Node arguments and module attributes as plain containers, tagged where Python types differ."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, fx.Node):
        return {"$node": v.name}
    if isinstance(v, torch.Size):
        return {"$size": [int(d) for d in v]}
    if isinstance(v, tuple):
        return {"$tuple": [_encode(a, where) for a in v]}
    if isinstance(v, list):
        return [_encode(a, where) for a in v]
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise SnnFileError(f"cannot save {where}: a dict with non-string keys")
        return {"$dict": {k: _encode(a, where) for k, a in v.items()}}
    if isinstance(v, slice):
        return {"$slice": [_encode(v.start, where), _encode(v.stop, where), _encode(v.step, where)]}
    if v is Ellipsis:
        return {"$ellipsis": True}
    if isinstance(v, torch.dtype):
        return {"$dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"$device": str(v)}
    if isinstance(v, torch.memory_format):
        return {"$memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.Tensor):
        return {"$tensor": v.detach().cpu().clone()}
    raise SnnFileError(f"cannot save {where}: a value of type {type(v).__name__} ({v!r:.60}) has no "
                       f"safe file representation")


def decode(v, nodes: dict[str, fx.Node] | None):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [decode(a, nodes) for a in v]
    if isinstance(v, torch.Tensor):
        return v
    if not (isinstance(v, dict) and len(v) == 1):
        raise SnnFileError(f"malformed value {v!r:.80}")
    (tag, x), = v.items()
    if tag == "$node" and nodes is not None and x in nodes:
        return nodes[x]
    if tag == "$tuple" and isinstance(x, list):
        return tuple(decode(a, nodes) for a in x)
    if tag == "$dict" and isinstance(x, dict):
        return {str(k): decode(a, nodes) for k, a in x.items()}
    if tag == "$size" and isinstance(x, list):
        return torch.Size([int(d) for d in x])
    if tag == "$slice" and isinstance(x, list) and len(x) == 3:
        return slice(*(decode(a, nodes) for a in x))
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$dtype" and isinstance(getattr(torch, str(x), None), torch.dtype):
        return getattr(torch, x)
    if tag == "$device" and isinstance(x, str):
        return torch.device(x)
    if tag == "$memory_format" and isinstance(getattr(torch, str(x), None), torch.memory_format):
        return getattr(torch, x)
    if tag == "$tensor" and isinstance(x, torch.Tensor):
        return x
    raise SnnFileError(f"malformed or unknown value {v!r:.80}")


# ---- save ---------------------------------------------------------------------------------------
def _module_record(name: str, mod: nn.Module) -> dict:
    if isinstance(mod, SpikingNeuron):
        kind = NEURON_CLASS
        skip = MODULE_INTERNALS | _NEURON_DERIVED
    elif type(mod) in _MODULE_CLASS_NAMES:
        kind = _MODULE_CLASS_NAMES[type(mod)]
        skip = MODULE_INTERNALS
    else:
        raise SnnFileError(f"cannot save module {name!r} of type {type(mod).__name__}: only signgd neurons and "
                           f"the affine torch.nn layers the converter accepts can be saved")
    attrs = {k: _encode(v, f"attribute {k!r} of module {name!r}") for k, v in vars(mod).items() if k not in skip}
    record = {"class": kind, "attributes": attrs,
              "parameters": {k: None if p is None else p.detach().cpu() for k, p in mod._parameters.items()},
              "buffers": {k: None if b is None else b.detach().cpu() for k, b in mod._buffers.items()},
              "non_persistent": sorted(mod._non_persistent_buffers_set)}
    if isinstance(mod, SpikingNeuron):
        record["target"] = mod.target
        record["params"] = _encode(dict(mod.params), f"params of neuron {name!r}")
    return record


def _node_record(node: fx.Node, gm: fx.GraphModule) -> dict:
    where = f"node {node.name!r}"
    target = node.target
    if node.op == "call_function":
        target = _FUNCTION_NAMES.get(id(node.target))
        if target is None:
            raise SnnFileError(f"cannot save {where}: it calls {spellings.function_name(node.target)}, "
                               f"which is not on the "
                               f"list of functions a saved network may call; please report it")
    elif node.op == "call_method" and not method_allowed(target):
        raise SnnFileError(f"cannot save {where}: tensor method {target!r} is not allowed in a saved network")
    try:
        check_node_names(node.op, node.name, node.target, node.kwargs, where)
    except SnnFileError as exc:
        raise SnnFileError(f"cannot save: {exc}; rename the module or argument in the model") from None
    record = {"name": node.name, "op": node.op, "target": target,
              "args": _encode(node.args, where), "kwargs": _encode(dict(node.kwargs), where)}
    origin = node.meta.get("signgd_origin")  # where a neuron came from (graph/provenance.py): strings only
    if isinstance(origin, dict):
        record["origin"] = {str(k): str(v) for k, v in origin.items()}
    return record


def _attribute_record(gm: fx.GraphModule, target: str) -> dict:
    owner_name, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    value = getattr(owner, attr)
    if attr in owner._parameters:
        return {"kind": "parameter", "value": value.detach().cpu()}
    if isinstance(value, torch.Tensor):
        return {"kind": "buffer" if attr in owner._buffers else "tensor", "value": value.detach().cpu()}
    return {"kind": "value", "value": _encode(value, f"attribute {target!r}")}


def to_payload(snn) -> dict:
    """The plain dict a file holds for ``snn`` (a SpikingNetwork)."""
    gm = snn.graph_module
    modules = {n.target: _module_record(n.target, gm.get_submodule(n.target))
               for n in gm.graph.nodes if n.op == "call_module"}
    attributes = {n.target: _attribute_record(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    return {
        "format": FORMAT, "version": FORMAT_VERSION,
        "signgd_version": __version__, "torch_version": str(torch.__version__),
        "settings": _encode(_savable_settings(snn), "the settings"),
        "input_shape": list(snn.input_shape), "values_per_sample": int(snn.values_per_sample),
        "conversion_log": [str(s) for s in snn.conversion_log],
        "dtype": _encode(snn.placement[1], "dtype"),
        "nodes": [_node_record(n, gm) for n in gm.graph.nodes],
        "modules": modules, "attributes": attributes,
    }


def save(snn, path: str | os.PathLike) -> Path:
    """Write ``snn`` to ``path`` (parent folders are created). Returns the path."""
    payload = to_payload(snn)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written file under the real name
    return path


def _savable_settings(snn) -> dict:
    """The settings, refusing a schedule that cannot be rebuilt from its description (a callable)."""
    try:
        make_schedule(snn.settings["schedule"])
    except (ValueError, TypeError, KeyError):
        raise SnnFileError(f"cannot save a network whose schedule is a Python callable "
                           f"({snn.settings.get('schedule')}); convert with a named schedule "
                           f"(e.g. \"exponential:lr=0.15,decay=0.95\") or a 1-D tensor of steps to save it") from None
    return dict(snn.settings)
