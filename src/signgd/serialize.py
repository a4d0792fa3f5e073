"""Save and load converted networks without unrestricted pickle: ``snn.save(path)``, ``signgd.load(path)``.

What a file holds, and which functions, methods and module classes it may name, is ``signgd.snnfile``
(which also writes it); this module reads a file back into a ``SpikingNetwork``. Loading checks the
format name and version, rebuilds the graph through the allowlists only (nothing is imported, no
code from the file runs), and runs the ANN once on a zero input: a missing, truncated, newer or
inconsistent file raises ``SnnFileError`` naming the problem.
"""
from __future__ import annotations

import builtins
import os
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from .network import SpikingNetwork
from .neurons import SpikingNeuron
from .snnfile import (
    FORMAT,
    FORMAT_VERSION,
    FUNCTIONS,
    MODULE_CLASSES,
    MODULE_INTERNALS,
    NEURON_CLASS,
    PLAIN_NAME,
    SnnFileError,
    check_node_names,
    decode,
    method_allowed,
    plain_path,
    save,
    to_payload,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "SnnFileError", "save", "load", "to_payload", "from_payload"]


def _read(path: Path, map_location) -> dict:
    if path.is_dir():
        inside = path / "snn.pt"
        fix = (f"give the network file inside it, {inside}" if inside.is_file() else
               "give the path of a network file written by snn.save() or `signgd convert --out DIR` (DIR/snn.pt)")
        raise SnnFileError(f"{path} is a directory, not a network file; {fix}")
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
    parts = plain_path(qualname, "attribute path").split(".")
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
    if kind == NEURON_CLASS:
        params = decode(rec.get("params", {"$dict": {}}), None)
        try:
            mod = SpikingNeuron(str(rec.get("target")), params)
        except ValueError as exc:
            raise SnnFileError(f"module {name!r}: {exc}; the file needs a newer signgd") from None
    elif kind in MODULE_CLASSES:
        cls = MODULE_CLASSES[kind]
        mod = cls.__new__(cls)
        nn.Module.__init__(mod)
    else:
        raise SnnFileError(f"module {name!r} has class {kind!r}, which a saved network may not contain")
    for k, v in rec.get("attributes", {}).items():
        if not isinstance(k, str) or k.startswith("__") or k in MODULE_INTERNALS:
            raise SnnFileError(f"module {name!r}: invalid attribute name {k!r}")
        object.__setattr__(mod, k, decode(v, None))
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
            if target not in FUNCTIONS:
                raise SnnFileError(f"{where} calls {target!r}, which a saved network may not call; the file is "
                                   f"not one signgd wrote (refused without running anything)")
            target = FUNCTIONS[target]
        elif op == "call_method":
            if not method_allowed(target):
                raise SnnFileError(f"{where} calls tensor method {target!r}, which a saved network may not call")
        elif op not in ("placeholder", "get_attr", "call_module", "output") or not isinstance(target, str):
            raise SnnFileError(f"{where}: invalid node kind {op!r} / target {target!r}")
        args, kwargs = decode(rec.get("args"), nodes), decode(rec.get("kwargs"), nodes)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise SnnFileError(f"{where}: malformed arguments")
        check_node_names(op, name, target, kwargs, where)
        if target is builtins.getattr and not (len(args) == 2 and isinstance(args[1], str)
                                               and not args[1].startswith("_")
                                               and PLAIN_NAME.fullmatch(args[1])):
            raise SnnFileError(f"{where}: getattr may only read public attributes")
        if op == "call_method" and not (args and isinstance(args[0], fx.Node)):
            raise SnnFileError(f"{where}: a method must be called on a node")
        nodes[name] = graph.create_node(op, target, args, kwargs, name=name)
        origin = rec.get("origin")  # labels for reports, never compiled into code; files before it: none
        if isinstance(origin, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in origin.items()):
            nodes[name].meta["signgd_origin"] = dict(origin)
    return graph


def from_payload(payload: dict, where: str = "the file"):
    """Rebuild a SpikingNetwork from the dict ``to_payload`` made."""
    try:
        root = nn.Module()
        for name, rec in payload["modules"].items():
            _set_path(root, name, _build_module(name, rec), "module")
        for name, rec in payload["attributes"].items():
            value = rec["value"] if rec["kind"] != "value" else decode(rec["value"], None)
            _set_path(root, name, value, rec["kind"])
        graph = _build_graph(payload["nodes"])
        gm = fx.GraphModule(root, graph, class_name="SpikingGraph")
        settings = decode(payload["settings"], None)
        snn = SpikingNetwork(gm, settings, tuple(payload["input_shape"]), payload["values_per_sample"])
        snn.conversion_log = list(payload.get("conversion_log", []))
    except SnnFileError as exc:
        raise SnnFileError(f"{where}: {exc}") from None
    except Exception as exc:  # missing keys, wrong types, a graph fx refuses...
        raise SnnFileError(f"{where}: inconsistent network file ({type(exc).__name__}: {exc}); "
                           f"save the network again") from None
    _smoke_test(snn, decode(payload.get("dtype", {"$dtype": "float32"}), None), where)
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
