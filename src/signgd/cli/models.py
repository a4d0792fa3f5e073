"""Turn a MODEL argument into a torch.nn.Module, and load weights into it with a clear report of misfits.

MODEL is one of ``torchvision:NAME``, ``timm:NAME``, ``signgd:NAME`` (the small models of
``signgd.models``) or ``path/to/file.py:factory`` (a function returning the module). ``--model-arg
key=value`` pairs become keyword arguments of the constructor (values parsed as Python literals).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import re
from pathlib import Path

import torch
from torch import nn

from .usage import UsageError

__all__ = ["parse_model_args", "build_model", "load_weights", "untrained"]


def parse_model_args(items: list[str] | None) -> dict:
    """``["num_classes=10", "in_chans=1"]`` -> ``{"num_classes": 10, "in_chans": 1}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--model-arg {item!r} is not key=value; write e.g. --model-arg num_classes=10")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()  # a bare word: a string
    return out


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _call(factory, kwargs: dict, what: str) -> nn.Module:
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise UsageError(f"{what} does not accept these --model-arg values ({exc}); check the argument names") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(name: str, kwargs: dict) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise UsageError("torchvision models need torchvision: pip install torchvision") from None
    known = tvm.list_models()
    if name not in known:
        raise UsageError(f"unknown torchvision model {name!r}{_suggest(name, known)}; "
                         f"list them with python -c 'import torchvision; print(torchvision.models.list_models())'")
    return _call(lambda **kw: tvm.get_model(name, **kw), kwargs, f"torchvision model {name!r}")


def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise UsageError("timm models need timm: pip install timm") from None
    known = timm.list_models()
    if name not in known:
        raise UsageError(f"unknown timm model {name!r}{_suggest(name, known)}; "
                         f"list them with python -c 'import timm; print(timm.list_models())'")
    kwargs = {"pretrained": False, **kwargs}
    return _call(lambda **kw: timm.create_model(name, **kw), kwargs, f"timm model {name!r}")


def _builtin(name: str, kwargs: dict) -> nn.Module:
    from .. import models
    known = {k: v for k, v in vars(models).items()
             if not k.startswith("_") and callable(v) and getattr(v, "__module__", "") == models.__name__}
    if name not in known:
        raise UsageError(f"unknown signgd model {name!r}{_suggest(name, known)}; known: {', '.join(sorted(known))}")
    return _call(known[name], kwargs, f"signgd model {name!r}")


def _from_file(spec: str, kwargs: dict) -> nn.Module:
    path_text, _, factory = spec.rpartition(":")
    path = Path(path_text)
    if not factory.isidentifier():
        raise UsageError(f"model {spec!r}: write path/to/file.py:factory, the factory a function returning the model")
    if not path.is_file():
        raise UsageError(f"model file {path} not found; write path/to/file.py:factory with an existing file")
    module_spec = importlib.util.spec_from_file_location(f"signgd_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)  # the user's own model code: running it is the point
    except Exception as exc:  # a syntax error, a missing import...: the user's file, not signgd
        raise UsageError(f"cannot import model file {path}: {type(exc).__name__}: {exc}; fix the file "
                         f"(python {path} shows the full traceback)") from exc
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        names = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                 and (inspect.isfunction(v) or inspect.isclass(v))
                 and getattr(v, "__module__", None) == module.__name__]
        raise UsageError(f"{path} has no function {factory!r}{_suggest(factory, names)}; "
                         f"it defines: {', '.join(names) or 'nothing callable'}")
    return _call(fn, kwargs, f"{path}:{factory}")


_SOURCES = {"torchvision": _torchvision, "timm": _timm, "signgd": _builtin}


def build_model(spec: str, kwargs: dict | None = None) -> nn.Module:
    """The module MODEL names, built with ``kwargs``, in eval mode."""
    kwargs = dict(kwargs or {})
    source, sep, name = spec.partition(":")
    if sep and source in _SOURCES:
        model = _SOURCES[source](name, kwargs)
    elif sep and spec.rpartition(":")[0].endswith(".py"):
        model = _from_file(spec, kwargs)
    else:
        raise UsageError(f"cannot read MODEL {spec!r}; write torchvision:NAME, timm:NAME, signgd:NAME or "
                         f"path/to/file.py:factory (e.g. torchvision:resnet18)")
    return model.eval()


def untrained(spec: str, kwargs: dict) -> bool:
    """Whether MODEL, built without ``--weights``, keeps its random initial weights: a torchvision,
    timm or signgd name without ``pretrained``/``weights`` arguments (a file's factory may load its own)."""
    source, sep, _ = spec.partition(":")
    return bool(sep) and source in _SOURCES and not kwargs.get("pretrained") and kwargs.get("weights") is None


def _state_dict(obj, path: Path) -> dict:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise UsageError(f"{path} holds no state_dict (a dict of tensors, or one under 'state_dict' or 'model'); "
                     f"save weights with torch.save(model.state_dict(), path)")


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load refused the weights file, in one line without torch's terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if pickled:
        return (f"{path} holds a pickled {pickled.group(1)} (a whole model saved with torch.save(model)?), not a "
                f"state_dict, and signgd runs no code from a file; where you trust the file, load it with "
                f"torch.load(path, weights_only=False) and save torch.save(model.state_dict(), 'weights.pt'), "
                f"then pass --weights weights.pt")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return (f"cannot read weights from {path} ({first[:160]}); give a file written by "
            f"torch.save(model.state_dict(), path)")


def load_weights(model: nn.Module, path: str) -> None:
    """Load a state_dict file (read with ``weights_only=True``: no code runs) strictly, or say
    exactly which keys and shapes do not fit."""
    path = Path(path)
    if not path.is_file():
        folder = " (it is a folder; give the file)" if path.is_dir() else ""
        raise UsageError(f"weights file {path} not found{folder}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(_unreadable(path, exc)) from None
    state = _state_dict(obj, path)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise UsageError(f"the weights in {path} do not fit the model: {'; '.join(parts)}. Build the model the "
                         f"weights were trained with (check --model-arg, e.g. num_classes=10 or in_chans=1)")
    model.load_state_dict(state)
