"""Save and load converted networks without unrestricted pickle: ``snn.save(path)``, ``signgd.load(path)``.

A file is a ``torch.save``d dict of plain containers (dict, list, str, int, float, bool, None) and
tensors, read back with ``torch.load(..., weights_only=True)``: the unpickler builds no object other
than those, so a crafted file cannot run code while it is read. The graph is stored as a list of
node records; what a record names is resolved only through allowlists, never by importing:

- ``call_function``: the functions a converted graph may hold (the affine functions ``graph/check.py``
  accepts, the helpers of ``graph/ops.py``, the neuron targets' torch spellings, a few pure torch,
  ``operator`` and ``math`` functions), each stored under a fixed name such as ``torch.flatten``.
  Saving a graph that holds any other function fails at save time, so every saved file loads.
- ``call_method``: names of ``torch.Tensor`` methods, no private or dunder names except the
  arithmetic ones fx records, and none of the few that leave the tensor world (storage, hooks...).
- ``call_module``: ``SpikingNeuron`` (rebuilt from its target name, plain params and buffers, so new
  targets need nothing here) and the affine ``torch.nn`` classes ``graph/check.py`` accepts (rebuilt
  from their plain attributes and tensors, without calling ``__init__``).

Names are code too: torch.fx writes node names, placeholder and module/attribute paths and keyword
names verbatim into the Python source it compiles for the graph, so every such string must be a
plain name (ASCII letters, digits, ``_``; no leading ``__``) before the graph is built, at save time
and at load time (a file with ``x=__import__('os').system(...)`` as an input name is refused).

Loading checks the format name and version, rebuilds the graph, and runs the ANN once on a zero
input: a missing, truncated, newer or inconsistent file raises ``SnnFileError`` naming the problem.
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
from .graph import check, ops
from .neurons import SpikingNeuron

__all__ = ["FORMAT", "FORMAT_VERSION", "SnnFileError", "save", "load"]

FORMAT = "signgd.SpikingNetwork"
FORMAT_VERSION = 1


class SnnFileError(SigngdError, ValueError):
    """A saved network cannot be written or read: missing, truncated, newer, unsafe or inconsistent."""


# ---- allowlists ---------------------------------------------------------------------------------
_NAMESPACES = (("torch", torch), ("torch.nn.functional", F), ("operator", operator), ("math", math),
               ("signgd.graph.ops", ops), ("signgd.targets", targets))
_EXTRA_FUNCTIONS = {
    F.pad, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.pow, operator.matmul,
    operator.neg, operator.pos, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.ones, torch.zeros, torch.full, torch.ones_like, torch.zeros_like, torch.full_like, torch.arange,
    torch.tensor, torch.as_tensor, torch.sqrt, torch.rsqrt, torch.exp, torch.abs, torch.clamp, torch.where,
    torch.maximum, torch.minimum, math.sqrt, math.prod, math.ceil, math.floor,
}


def _allowed_functions() -> dict[str, object]:
    """Fixed name -> function for every function a saved graph may call (built once, at import)."""
    wanted = set(check.AFFINE_FUNCTIONS) | set(check.SCALING_FUNCTIONS) | set(check.ADD_PRODUCT_FUNCTIONS)
    wanted |= _EXTRA_FUNCTIONS
    wanted |= set(getattr(targets, "_FUNCTIONS", {}))
    wanted |= {f for name, f in vars(ops).items() if callable(f) and not name.startswith("_")
               and getattr(f, "__module__", None) == ops.__name__}
    table: dict[str, object] = {"builtins.getattr": builtins.getattr}
    for fn in wanted:
        for ns_name, ns in _NAMESPACES:
            name = next((k for k, v in vars(ns).items() if v is fn and not k.startswith("_")), None)
            if name is not None:
                table.setdefault(f"{ns_name}.{name}", fn)
                break
    return table


_FUNCTIONS = _allowed_functions()
_FUNCTION_NAMES = {id(fn): name for name, fn in _FUNCTIONS.items()}

# Tensor methods that hand out memory, hooks or callables: never needed by a converted graph.
_DENIED_METHODS = {"storage", "untyped_storage", "data_ptr", "numpy", "register_hook", "apply_", "map_",
                   "map2_", "backward", "share_memory_", "pin_memory", "record_stream", "set_",
                   "register_post_accumulate_grad_hook", "tolist", "item"}
_DUNDER_METHODS = {"__getitem__", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
                   "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__",
                   "__neg__", "__pos__", "__matmul__", "__rmatmul__"}

_MODULE_CLASSES = {f"torch.nn.{c.__name__}": c for c in check.AFFINE_MODULES}
_MODULE_CLASS_NAMES = {c: name for name, c in _MODULE_CLASSES.items()}
_NEURON = "signgd.SpikingNeuron"
# Attributes every nn.Module has: rebuilt by nn.Module.__init__, never read from a file.
_MODULE_INTERNALS = set(vars(nn.Module()))
_NEURON_DERIVED = {"_spec", "target", "params"}


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


def _plain_name(name, what: str, identifier: bool = False) -> str:
    """``name`` when torch.fx may write it into generated source as it is: ASCII letters, digits and
    ``_``, no leading ``__`` (and a Python identifier, not a keyword, where fx needs one)."""
    ok = isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None and not name.startswith("__")
    if ok and identifier:
        ok = name.isidentifier() and not keyword.iskeyword(name)
    if not ok:
        raise SnnFileError(f"{what} {name!r:.80} is not a plain name (letters, digits, _); a network file "
                           f"holds only plain names (refused without running anything)")
    return name


def _plain_path(path, what: str) -> str:
    """A dotted path of plain names (a module or attribute of the graph)."""
    if not isinstance(path, str):
        raise SnnFileError(f"{what} {path!r:.80} is not a dotted name")
    for part in path.split("."):
        _plain_name(part, what)
    return path


def _check_node_names(op, name, target, kwargs, where: str) -> None:
    """Every string of a node that fx writes into generated source verbatim (save and load)."""
    _plain_name(name, f"{where}: node name")
    if op == "placeholder":
        _plain_name(target, f"{where}: input name", identifier=True)
    elif op in ("get_attr", "call_module"):
        _plain_path(target, f"{where}: target")
    for key in kwargs:
        _plain_name(key, f"{where}: keyword", identifier=True)


def _method_allowed(name) -> bool:
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


def _decode(v, nodes: dict[str, fx.Node] | None):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_decode(a, nodes) for a in v]
    if isinstance(v, torch.Tensor):
        return v
    if not (isinstance(v, dict) and len(v) == 1):
        raise SnnFileError(f"malformed value {v!r:.80}")
    (tag, x), = v.items()
    if tag == "$node" and nodes is not None and x in nodes:
        return nodes[x]
    if tag == "$tuple" and isinstance(x, list):
        return tuple(_decode(a, nodes) for a in x)
    if tag == "$dict" and isinstance(x, dict):
        return {str(k): _decode(a, nodes) for k, a in x.items()}
    if tag == "$size" and isinstance(x, list):
        return torch.Size([int(d) for d in x])
    if tag == "$slice" and isinstance(x, list) and len(x) == 3:
        return slice(*(_decode(a, nodes) for a in x))
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
        kind = _NEURON
        skip = _MODULE_INTERNALS | _NEURON_DERIVED
    elif type(mod) in _MODULE_CLASS_NAMES:
        kind = _MODULE_CLASS_NAMES[type(mod)]
        skip = _MODULE_INTERNALS
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
            raise SnnFileError(f"cannot save {where}: it calls {check._name(node.target)}, which is not on the "
                               f"list of functions a saved network may call; please report it")
    elif node.op == "call_method" and not _method_allowed(target):
        raise SnnFileError(f"cannot save {where}: tensor method {target!r} is not allowed in a saved network")
    try:
        _check_node_names(node.op, node.name, node.target, node.kwargs, where)
    except SnnFileError as exc:
        raise SnnFileError(f"cannot save: {exc}; rename the module or argument in the model") from None
    return {"name": node.name, "op": node.op, "target": target,
            "args": _encode(node.args, where), "kwargs": _encode(dict(node.kwargs), where)}


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
    from . import __version__
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


# ---- load ---------------------------------------------------------------------------------------
def _read(path: Path, map_location) -> dict:
    if not path.is_file():
        raise SnnFileError(f"{path}: no such file; give the path of a network written by snn.save() or "
                           f"`signgd convert --out DIR` (DIR/snn.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, a pickle that wants to build objects, not a torch file...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        reason = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0])
        raise SnnFileError(f"{path}: not a readable signgd network file ({reason[:200]}); it is truncated, "
                           f"corrupt, or not written by snn.save(). Save the network again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SnnFileError(f"{path}: not a signgd network file (no {FORMAT!r} header); "
                           f"load files written by snn.save()")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise SnnFileError(f"{path}: invalid format version {version!r}; the file is corrupt")
    if version > FORMAT_VERSION:
        raise SnnFileError(f"{path}: written by a newer signgd (format version {version}, signgd "
                           f"{payload.get('signgd_version')}); this signgd reads version {FORMAT_VERSION}. "
                           f"Upgrade signgd (pip install -U signgd)")
    return payload


def _set_path(root: nn.Module, qualname: str, value, kind: str) -> None:
    """Put ``value`` at ``root.a.b.c``, creating empty container modules on the way."""
    parts = _plain_path(qualname, "attribute path").split(".")
    owner = root
    for p in parts[:-1]:
        if p not in owner._modules:
            owner.add_module(p, nn.Module())
        owner = owner._modules[p]
    if kind == "module":
        owner.add_module(parts[-1], value)
    elif kind == "parameter":
        owner.register_parameter(parts[-1], nn.Parameter(value, requires_grad=False))
    elif kind == "buffer":
        owner.register_buffer(parts[-1], value)
    else:
        object.__setattr__(owner, parts[-1], value)


def _build_module(name: str, rec: dict) -> nn.Module:
    kind = rec.get("class")
    if kind == _NEURON:
        params = _decode(rec.get("params", {"$dict": {}}), None)
        try:
            mod = SpikingNeuron(str(rec.get("target")), params)
        except ValueError as exc:
            raise SnnFileError(f"module {name!r}: {exc}; the file needs a newer signgd") from None
    elif kind in _MODULE_CLASSES:
        cls = _MODULE_CLASSES[kind]
        mod = cls.__new__(cls)
        nn.Module.__init__(mod)
    else:
        raise SnnFileError(f"module {name!r} has class {kind!r}, which a saved network may not contain")
    for k, v in rec.get("attributes", {}).items():
        if not isinstance(k, str) or k.startswith("__") or k in _MODULE_INTERNALS:
            raise SnnFileError(f"module {name!r}: invalid attribute name {k!r}")
        object.__setattr__(mod, k, _decode(v, None))
    for k, t in rec.get("parameters", {}).items():
        mod.register_parameter(k, None if t is None else nn.Parameter(_tensor(t, name), requires_grad=False))
    non_persistent = set(rec.get("non_persistent", []))
    for k, t in rec.get("buffers", {}).items():
        mod.register_buffer(k, None if t is None else _tensor(t, name), persistent=k not in non_persistent)
    return mod


def _tensor(t, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise SnnFileError(f"{where}: expected a tensor, got {type(t).__name__}")
    return t


def _build_graph(records: list) -> fx.Graph:
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for rec in records:
        op, name, target = rec.get("op"), rec.get("name"), rec.get("target")
        where = f"node {name!r}"
        if op == "call_function":
            if target not in _FUNCTIONS:
                raise SnnFileError(f"{where} calls {target!r}, which a saved network may not call; the file is "
                                   f"not one signgd wrote (refused without running anything)")
            target = _FUNCTIONS[target]
        elif op == "call_method":
            if not _method_allowed(target):
                raise SnnFileError(f"{where} calls tensor method {target!r}, which a saved network may not call")
        elif op not in ("placeholder", "get_attr", "call_module", "output") or not isinstance(target, str):
            raise SnnFileError(f"{where}: invalid node kind {op!r} / target {target!r}")
        args, kwargs = _decode(rec.get("args"), nodes), _decode(rec.get("kwargs"), nodes)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise SnnFileError(f"{where}: malformed arguments")
        _check_node_names(op, name, target, kwargs, where)
        if target is builtins.getattr and not (len(args) == 2 and isinstance(args[1], str)
                                               and not args[1].startswith("_")
                                               and _PLAIN_NAME.fullmatch(args[1])):
            raise SnnFileError(f"{where}: getattr may only read public attributes")
        if op == "call_method" and not (args and isinstance(args[0], fx.Node)):
            raise SnnFileError(f"{where}: a method must be called on a node")
        nodes[name] = graph.create_node(op, target, args, kwargs, name=name)
    return graph


def from_payload(payload: dict, where: str = "the file"):
    """Rebuild a SpikingNetwork from the dict ``to_payload`` made."""
    from .network import SpikingNetwork
    try:
        root = nn.Module()
        for name, rec in payload["modules"].items():
            _set_path(root, name, _build_module(name, rec), "module")
        for name, rec in payload["attributes"].items():
            value = rec["value"] if rec["kind"] != "value" else _decode(rec["value"], None)
            _set_path(root, name, value, rec["kind"])
        graph = _build_graph(payload["nodes"])
        gm = fx.GraphModule(root, graph, class_name="SpikingGraph")
        settings = _decode(payload["settings"], None)
        snn = SpikingNetwork(gm, settings, tuple(payload["input_shape"]), payload["values_per_sample"])
        snn.conversion_log = list(payload.get("conversion_log", []))
    except SnnFileError as exc:
        raise SnnFileError(f"{where}: {exc}") from None
    except Exception as exc:  # missing keys, wrong types, a graph fx refuses...
        raise SnnFileError(f"{where}: inconsistent network file ({type(exc).__name__}: {exc}); "
                           f"save the network again") from None
    _smoke_test(snn, _decode(payload.get("dtype", {"$dtype": "float32"}), None), where)
    return snn


def _smoke_test(snn, dtype, where: str) -> None:
    """Run the ANN on one zero input: a file whose tensors do not fit its graph fails here, not later."""
    device = snn.placement[0]
    try:
        with torch.inference_mode():
            snn.graph_module(torch.zeros((1, *snn.input_shape), dtype=dtype, device=device))
    except Exception as exc:
        raise SnnFileError(f"{where}: the stored weights do not fit the stored graph ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); the file is corrupt or was edited") from None


def load(path: str | os.PathLike, map_location="cpu"):
    """Read a SpikingNetwork written by ``snn.save(path)``. Never runs code from the file."""
    path = Path(path)
    return from_payload(_read(path, map_location), str(path))


def _savable_settings(snn) -> dict:
    """The settings, refusing a schedule that cannot be rebuilt from its description (a callable)."""
    from .schedules import make_schedule

    try:
        make_schedule(snn.settings["schedule"])
    except (ValueError, TypeError, KeyError):
        raise SnnFileError(f"cannot save a network whose schedule is a Python callable "
                           f"({snn.settings.get('schedule')}); convert with a named schedule "
                           f"(e.g. \"exponential:lr=0.15,decay=0.95\") or a 1-D tensor of steps to save it") from None
    return dict(snn.settings)
