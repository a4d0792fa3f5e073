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
    The reference: plain torch element-wise ops, any device and dtype.
``"c"``
    A C function (``_csrc/signgd_scan.c``) compiled with the system C compiler on first use and
    loaded with ctypes; CPU float32/float64. OpenMP over blocks of elements, the loop over ``t``
    inside, so ``target`` is read once and ``out`` written once. Uses ``torch.get_num_threads()``
    threads. The library is cached in ``$SIGNGD_CACHE`` (default ``~/.cache/signgd/kernels``),
    keyed by a hash of the source, the compiler and its flags.
``"triton"``
    A Triton kernel for CUDA float32/float64 tensors: one program per block of elements, the
    loop over ``t`` inside.

``backend=None`` is auto: ``$SIGNGD_KERNEL`` (``torch``, ``c``, ``triton`` or ``auto``) when set,
otherwise "c" for CPU float32/float64, "triton" for CUDA float32/float64 when triton imports, and
"torch" for everything else. A backend named explicitly (argument or ``$SIGNGD_KERNEL``) that
cannot run raises :class:`KernelUnavailableError` saying why; only auto falls back (logging the
reason once on the ``signgd`` logger).

The "c" and "triton" backends do the torch reference's operations in the same order and in the
same precision (``eta`` and a scalar ``out_scale`` are rounded to the tensor's dtype first, as
torch does for a scalar operand), so their results are bit-identical to it.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .errors import SigngdError

__all__ = ["signgd_scan", "signgd_fire", "signgd_update", "resolve_backend", "available_backends", "kernel_info", "KernelUnavailableError",
           "BACKENDS"]

log = logging.getLogger("signgd")

BACKENDS = ("torch", "c", "triton")
ENV_BACKEND = "SIGNGD_KERNEL"
ENV_CACHE = "SIGNGD_CACHE"

SOURCE = Path(__file__).resolve().parent / "_csrc" / "signgd_scan.c"
#: The C compiler: None tries ``$CC``, then ``gcc``, then ``cc``. Tests point it at a missing program.
COMPILER: str | None = None
#: Flags for every build. No -ffast-math, and no FMA contraction: results must match torch bit for bit.
BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=gnu99", "-ffp-contract=off", "-fno-fast-math")
#: Tried first; dropped when the compiler rejects them.
NATIVE_FLAGS = ("-march=native",)
_COMPILE_TIMEOUT_S = 300
_CACHE_VERSION = "2"

_CPU_DTYPES = (torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float32, torch.float64)


class KernelUnavailableError(SigngdError, RuntimeError):
    """A kernel backend was asked for by name but cannot run on these inputs or on this machine."""


# --------------------------------------------------------------------------------------------
# The public entry point
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
        if _overlap(out, target) and not _same_buffer(out, target):
            raise ValueError("signgd_scan: out overlaps target; pass target itself (to scan in place) "
                             "or a separate buffer")

    if pre not in (None, "square", "mul"):
        raise ValueError(f"signgd_scan: unknown pre {pre!r}; expected None, 'square' or 'mul'")
    if pre == "mul" and not isinstance(factor, torch.Tensor):
        raise ValueError("signgd_scan: pre='mul' needs a factor tensor")
    normalize = bool(normalize) and out_scale is not None

    name = _choose(target, y, out_scale, backend)
    if pre is not None or normalize:
        fused = _c_prologue(target, y, out_scale, pre, factor, normalize) if name == "c" else None
        if fused is None:  # torch computes the target; the scan then runs as usual
            donated = out is not None and _same_buffer(out, target)  # the caller gave us its memory
            target = _prologue_torch(target, pre, factor, out_scale if normalize else None, donated)
            name = _choose(target, y, out_scale, backend)
        else:
            res, y_final = _scan_c(target, y, etas, out_scale, spikes, out, inplace, fused)
            if inplace and y_final is not y:
                y.copy_(y_final)
                y_final = y
            return res, y_final
    if name == "c":
        res, y_final = _scan_c(target, y, etas, out_scale, spikes, out, inplace)
    elif name == "triton":
        res, y_final = _scan_triton(target, y, etas, out_scale, spikes, out, inplace)
    else:
        res, y_final = _scan_torch(target, y, etas, out_scale, spikes, out)
    if inplace and y_final is not y:
        y.copy_(y_final)
        y_final = y
    return res, y_final


def _prologue_torch(target, pre, factor, divisor, donated=False):
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


_PRE_CODES = {None: 0, "square": 1, "mul": 2}


def _c_prologue(target, y, out_scale, pre, factor, normalize):
    """``(pre code, factor or None, row length, divide)`` when the C kernel can compute this
    target in its pass, else None (then torch computes it first)."""
    S = tuple(target.shape[1:])
    if normalize:
        mode, _, _ = _scale_for_kernel(out_scale, y, S)
        if mode != "kernel" or torch.result_type(target, out_scale) != target.dtype:
            return None
    if pre != "mul":
        return _PRE_CODES[pre], None, 0, normalize
    if (factor.dtype != target.dtype or factor.device != target.device or factor.dim() != target.dim()
            or factor.requires_grad and torch.is_grad_enabled()):
        return None
    k = factor.dim()
    while k > 1 and factor.shape[k - 1] == 1:
        k -= 1
    if tuple(factor.shape[:k]) != tuple(target.shape[:k]):
        return None  # not one factor per row: it broadcasts along other dimensions
    rowlen = 1
    for d in target.shape[k:]:
        rowlen *= d
    return _PRE_CODES[pre], factor.detach().contiguous(), rowlen, normalize


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
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


def _same_buffer(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` are the same contiguous memory, element for element."""
    return (a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.shape == b.shape
            and a.is_contiguous() and b.is_contiguous())


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
    if _c_library()[0] is not None:
        names.append("c")
    if _triton_reason() is None:
        names.append("triton")
    return names


def kernel_info() -> dict:
    """What the kernels module found: the backend auto picks for a CPU float32 tensor, the compiled
    C library (path and flags) or why it is unavailable, and triton's status."""
    lib, info = _c_library()
    triton_reason = _triton_reason()
    env = os.environ.get(ENV_BACKEND)
    return {
        "auto_cpu": "c" if lib is not None else "torch",
        "env": {ENV_BACKEND: env},
        "threads": torch.get_num_threads(),
        "c": {"available": lib is not None, "path": info.get("path"), "flags": info.get("flags"),
              "compiler": info.get("compiler"), "reason": info.get("reason"),
              "cache_dir": str(_cache_dir())},
        "triton": {"available": triton_reason is None, "reason": triton_reason},
    }


# --------------------------------------------------------------------------------------------
# Choosing a backend
# --------------------------------------------------------------------------------------------

_logged: set = set()


def _log_once(level: int, key, message: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        log.log(level, message, *args)


def _choose(target, y, out_scale, backend):
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
            _log_once(logging.INFO, ("auto", want, reason),
                      "signgd kernels: using the torch backend instead of %r: %s", want, reason)
            return "torch"
    return want


def _describe(t: torch.Tensor) -> str:
    return f"{t.device.type} {str(t.dtype).replace('torch.', '')}"


def _reason_cannot_run(backend, target, y, out_scale) -> str | None:
    """Why ``backend`` cannot run these inputs (None: it can)."""
    if backend == "c":
        if target.device.type != "cpu" or target.dtype not in _CPU_DTYPES:
            return f"the 'c' backend needs a CPU float32/float64 tensor; got {_describe(target)}"
    elif backend == "triton":
        if target.device.type != "cuda" or target.dtype not in _TRITON_DTYPES:
            return f"the 'triton' backend needs a CUDA float32/float64 tensor; got {_describe(target)}"
    if y.dtype != target.dtype or y.device != target.device:
        return f"y ({_describe(y)}) must have target's device and dtype ({_describe(target)})"
    if torch.is_grad_enabled() and (target.requires_grad or y.requires_grad or (
            isinstance(out_scale, torch.Tensor) and out_scale.requires_grad)):
        return "the inputs require grad (the fused kernels are not differentiable)"
    if backend == "c":
        lib, info = _c_library()
        if lib is None:
            return f"the C library is unavailable: {info.get('reason')}"
    elif backend == "triton":
        reason = _triton_reason()
        if reason is not None:
            return reason
    return None


# --------------------------------------------------------------------------------------------
# The torch reference (the rule itself; ``signgd.neurons`` re-exports it)
# --------------------------------------------------------------------------------------------

def signgd_fire(y_prev: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``s_t = 1[y_{t-1} >= f(x_t)]``: the neuron says "my estimate is too high"."""
    return y_prev >= target


def signgd_update(y_prev: torch.Tensor, spike: torch.Tensor, eta) -> torch.Tensor:
    """``y_t = y_{t-1} - eta_t (2 s_t - 1)``: one sign-gradient step on ``|y - f(x)|``."""
    return torch.where(spike, y_prev - eta, y_prev + eta)


def _scan_torch(target, y, etas, out_scale, spikes, out=None):
    Tc = target.shape[0]
    if Tc == 0:
        return _empty_out(target, y, out_scale, out), y
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
    return _scaled(ys, out_scale, out), y


def _scaled(ys, out_scale, out):
    """``ys * out_scale`` (or ys), into ``out`` when given (``ys`` may be ``out`` itself)."""
    if out_scale is None:
        if out is not None and out is not ys:
            out.copy_(ys)
            return out
        return ys
    if out is None:
        return ys * out_scale
    return torch.mul(ys, out_scale, out=out)


def _empty_out(target, y, out_scale, out=None):
    if out is not None:
        return out
    res = torch.empty((0, *y.shape), dtype=y.dtype, device=y.device)
    return res if out_scale is None else res * out_scale


def _scale_for_kernel(out_scale, y, S):
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


def _kernel_out(target, scale_mode, out):
    """The buffer a fused kernel writes: ``out`` itself unless torch must scale afterwards."""
    if out is not None and scale_mode != "after":
        return out
    return torch.empty(target.shape, dtype=target.dtype, device=target.device)


def _finish(res, y_final, out_scale, scale_mode, counts, spikes, out):
    if counts is not None:
        spikes += counts.to(spikes.device)
    if scale_mode == "after":
        res = _scaled(res, out_scale, out)
    return res, y_final


# --------------------------------------------------------------------------------------------
# The C backend
# --------------------------------------------------------------------------------------------

_c_lock = threading.Lock()
_c_state: tuple | None = None          # (ctypes library or None, info dict)


def _reset() -> None:
    """Forget the loaded library and the one-time log messages (tests use it after changing
    COMPILER or $SIGNGD_CACHE). A library already loaded in the process stays mapped."""
    global _c_state
    with _c_lock:
        _c_state = None
        _logged.clear()


def _cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "signgd" / "kernels"


def _find_compiler() -> str | None:
    names = [COMPILER] if COMPILER is not None else [os.environ.get("CC"), "gcc", "cc"]
    for name in names:
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def _cpu_id() -> str:
    """Identifies the CPU's instruction set, so a -march=native build in a shared cache directory
    is not reused on a different kind of machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform
    return platform.machine() + platform.processor()


def _c_library():
    """The loaded C library and an info dict (path, flags, compiler; or reason). Built once."""
    global _c_state
    state = _c_state
    if state is not None:
        return state
    with _c_lock:
        if _c_state is None:
            lib, info = _build_and_load()
            if lib is None:
                _log_once(logging.WARNING, ("c-unavailable", info.get("reason")),
                          "signgd kernels: the C backend is unavailable (%s); using torch ops instead",
                          info.get("reason"))
            _c_state = (lib, info)
        return _c_state


def _build_and_load():
    compiler = _find_compiler()
    if compiler is None:
        wanted = COMPILER if COMPILER is not None else "$CC, gcc or cc"
        return None, {"reason": f"no C compiler found ({wanted})"}
    try:
        source = SOURCE.read_bytes()
    except OSError as e:
        return None, {"reason": f"cannot read the kernel source {SOURCE}: {e}"}
    cache = _cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return None, {"reason": f"cannot create the cache directory {cache}: {e}"}
    errors = []
    for flags in (BASE_FLAGS + NATIVE_FLAGS, BASE_FLAGS):
        key = hashlib.sha256()
        for part in (_CACHE_VERSION, source, os.path.realpath(compiler), " ".join(flags),
                     _cpu_id() if NATIVE_FLAGS and set(NATIVE_FLAGS) <= set(flags) else ""):
            key.update(part if isinstance(part, bytes) else part.encode())
            key.update(b"\0")
        path = cache / f"signgd_scan-{key.hexdigest()[:20]}.so"
        if not path.exists():
            err = _compile(compiler, flags, path)
            if err is not None:
                errors.append(err)
                continue
        try:
            lib = _bind(ctypes.CDLL(str(path)))
        except (OSError, AttributeError) as e:
            errors.append(f"cannot load {path}: {e}")
            continue
        err = _self_check(lib)
        if err is not None:
            errors.append(f"{path} {err}")
            continue
        return lib, {"path": str(path), "flags": list(flags), "compiler": compiler}
    return None, {"reason": "; ".join(errors) or "unknown", "compiler": compiler}


def _compile(compiler, flags, path: Path) -> str | None:
    """Compile into a temporary name in the cache directory, then rename atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so.tmp", dir=path.parent)
    os.close(fd)
    cmd = [compiler, *flags, str(SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            return f"`{' '.join(cmd)}` failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}"
        os.replace(tmp, path)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"`{' '.join(cmd)}` failed: {e}"
    finally:
        if os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _bind(lib):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for name in ("signgd_scan_f32", "signgd_scan_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, i64, p, p, p, i64, i64, ctypes.c_int, p, i64, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
    for name, real in (("signgd_adaptive_f32", ctypes.c_float), ("signgd_adaptive_f64", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, i64, p, p, i64, i64, ctypes.c_int, real, real, real, real]
        fn.restype = ctypes.c_int
    return lib


def _self_check(lib) -> str | None:
    """A few hundred elements against the torch reference, ties included: guards against a
    miscompiled or stale library."""
    g = torch.Generator().manual_seed(0)
    for dtype in _CPU_DTYPES:
        target = torch.randint(-3, 4, (5, 3, 70), generator=g).to(dtype) / 4
        y = torch.zeros(3, 70, dtype=dtype)
        etas = torch.tensor([0.5, 0.25, 0.25, 0.125, 0.3], dtype=torch.float64)
        scale = torch.rand(70, generator=g, dtype=dtype) + 0.5
        ref_sp = torch.zeros(5, dtype=torch.float64)
        ref = _scan_torch(target, y, etas, scale, ref_sp)
        sp = torch.zeros(5, dtype=torch.float64)
        got = _run_c(lib, target, y, etas, scale, sp)
        if not (torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1]) and torch.equal(ref_sp, sp)):
            return f"failed its self-check against the torch reference ({dtype})"
        # the targets computed in the pass: square / scale, and x * factor-per-row / scale
        factor = torch.rand(5, 3, 1, generator=g, dtype=dtype) + 0.5
        for pre, fac in (("square", None), ("mul", factor)):
            ref = _scan_torch(_prologue_torch(target, pre, fac, scale), y, etas, scale, None)
            got = _run_c(lib, target, y, etas, scale, None,
                         prologue=_c_prologue(target, y, scale, pre, fac, True))
            if not (torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])):
                return f"failed its self-check against the torch reference ({dtype}, pre={pre})"
        if not _adaptive_matches(lib, target, etas.to(dtype), scale):
            return f"failed its self-check against the torch reference ({dtype}, adaptive steps)"
    return None


def _adaptive_matches(lib, target, etas, scale) -> bool:
    from .adaptive import adaptive_scan_torch

    runs = []
    for c in (False, True):
        y, d = torch.zeros(target.shape[1:], dtype=target.dtype), torch.zeros(target.shape[1:], dtype=target.dtype)
        sp = torch.zeros(target.shape[0], dtype=torch.float64)
        args = (target, y, d, etas, 1.2, 0.5, scale, sp)
        out = _run_adaptive_c(lib, *args) if c else adaptive_scan_torch(*args)
        runs.append((out, y, d, sp))
    return all(torch.equal(a, b) for a, b in zip(*runs))


def adaptive_scan_c(target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None):
    """``signgd.adaptive``'s scan in C (same arguments), or None when the C kernel cannot run these
    inputs (not on the CPU, another dtype, non-contiguous state, a scale that promotes, the C
    library unavailable, or ``$SIGNGD_KERNEL`` naming another backend): the caller then runs torch."""
    if target.dim() < 1 or _choose(target, y, out_scale, None) != "c":
        return None
    if not (y.is_contiguous() and d.is_contiguous() and y.dtype == d.dtype == target.dtype
            and _scale_for_kernel(out_scale, y, tuple(target.shape[1:]))[0] != "after"):
        return None
    return _run_adaptive_c(_c_library()[0], target, y, d, etas, grow, shrink, out_scale, spikes, out)


def _run_adaptive_c(lib, target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None):
    from .adaptive import MAX_GAIN, MIN_GAIN

    Tc, S = target.shape[0], tuple(target.shape[1:])
    mode, scale, scale_len = _scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    res = out if out is not None else torch.empty(target.shape, dtype=target.dtype)
    eta = etas.detach().to(device="cpu", dtype=target.dtype).contiguous()
    counts = torch.zeros(Tc, dtype=torch.int64) if spikes is not None else None
    if Tc > 0 and y.numel() > 0:
        fn = lib.signgd_adaptive_f32 if target.dtype == torch.float32 else lib.signgd_adaptive_f64
        rc = fn(tgt.data_ptr(), y.data_ptr(), d.data_ptr(), eta.data_ptr(),
                scale.data_ptr() if mode == "kernel" else None, scale_len, res.data_ptr(),
                counts.data_ptr() if counts is not None else None, Tc, y.numel(),
                max(1, torch.get_num_threads()), grow, shrink, MIN_GAIN, MAX_GAIN)
        if rc != 0:
            raise RuntimeError(f"signgd adaptive scan (C) failed with code {rc}")
    if counts is not None:
        spikes += counts.to(spikes.device)
    return res


def _scan_c(target, y, etas, out_scale, spikes, out=None, inplace=False, prologue=None):
    lib, _ = _c_library()
    return _run_c(lib, target, y, etas, out_scale, spikes, out, inplace, prologue)


def _run_c(lib, target, y, etas, out_scale, spikes, out=None, inplace=False, prologue=None):
    """``prologue``: ``(pre code, factor, row length, divide)`` from ``_c_prologue``, or None."""
    Tc, S = target.shape[0], tuple(target.shape[1:])
    if Tc == 0:
        return _empty_out(target, y, out_scale, out), y
    dtype = target.dtype
    mode, scale, scale_len = _scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    y0 = y if y.is_contiguous() else y.contiguous()
    # torch rounds a scalar operand to the tensor's dtype before the op; so does this
    eta = etas.detach().to(device="cpu", dtype=dtype).contiguous()
    res = _kernel_out(target, mode, out)
    # in place when asked and y is contiguous: the kernel reads each block's y before writing it
    y_final = y0 if inplace and y0 is y else torch.empty(S, dtype=dtype)
    N = y_final.numel()
    counts = torch.zeros(Tc, dtype=torch.int64) if spikes is not None else None
    if N > 0:
        fn = lib.signgd_scan_f32 if dtype == torch.float32 else lib.signgd_scan_f64
        pre, factor, rowlen, divide = prologue if prologue is not None else (0, None, 0, False)
        rc = fn(tgt.data_ptr(), y0.data_ptr(), eta.data_ptr(),
                scale.data_ptr() if mode == "kernel" else None, scale_len,
                res.data_ptr(), y_final.data_ptr(), counts.data_ptr() if counts is not None else None,
                Tc, N, max(1, torch.get_num_threads()),
                factor.data_ptr() if factor is not None else None, rowlen, pre, int(bool(divide)))
        if rc != 0:
            raise RuntimeError(f"signgd_scan (C) failed with code {rc}")
    return _finish(res, y_final, out_scale, mode, counts, spikes, out)


# --------------------------------------------------------------------------------------------
# The triton backend (CUDA)
# --------------------------------------------------------------------------------------------

_triton_state: tuple | None = None     # (kernel or None, reason)
_TRITON_BLOCK = 1024
_TRITON_WARPS = 4


def _triton_reason() -> str | None:
    """None when the triton backend can run on this machine, else why not."""
    global _triton_state
    if _triton_state is None:
        if not torch.cuda.is_available():
            return "no CUDA device"
        try:
            _triton_state = (_build_triton_kernel(), None)
        except Exception as e:  # ImportError, or a triton too old for this code
            _triton_state = (None, f"triton is unavailable ({type(e).__name__}: {e})")
    return _triton_state[1]


def _build_triton_kernel():
    global triton, tl
    import triton
    import triton.language as tl

    @triton.jit
    def _signgd_scan_kernel(target_ptr, y_ptr, etas_ptr, scale_ptr, out_ptr, yfinal_ptr, partial_ptr,
                            Tc, N, M, SCALE_MODE: tl.constexpr, COUNT: tl.constexpr,
                            BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        y = tl.load(y_ptr + offs, mask=mask, other=0)
        if SCALE_MODE == 1:
            sc = tl.load(scale_ptr)
        if SCALE_MODE == 2:
            sc = tl.load(scale_ptr + offs % M, mask=mask, other=0)
        tp = target_ptr + offs
        op = out_ptr + offs
        pp = partial_ptr + pid
        nprog = tl.num_programs(0)
        for t in range(Tc):
            tg = tl.load(tp, mask=mask, other=0)
            eta = tl.load(etas_ptr + t)
            s = y >= tg
            y = tl.where(s, y - eta, y + eta)
            if SCALE_MODE == 0:
                tl.store(op, y, mask=mask)
            else:
                tl.store(op, y * sc, mask=mask)
            if COUNT:
                tl.store(pp, tl.sum((s & mask).to(tl.int32), axis=0))
                pp += nprog
            tp += N
            op += N
        tl.store(yfinal_ptr + offs, y, mask=mask)

    return _signgd_scan_kernel


def _scan_triton(target, y, etas, out_scale, spikes, out=None, inplace=False):
    kernel = _triton_state[0]
    Tc, S = target.shape[0], tuple(target.shape[1:])
    if Tc == 0:
        return _empty_out(target, y, out_scale, out), y
    dtype, device = target.dtype, target.device
    mode, scale, scale_len = _scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    y0 = y if y.is_contiguous() else y.contiguous()
    eta = etas.detach().to(device=device, dtype=dtype).contiguous()
    # The kernel gets its own output buffer when out is target itself (no promise here that a
    # program's load of an element is ordered before its store to the same address).
    aliased = out is not None and _same_buffer(out, target)
    res = _kernel_out(target, mode, None if aliased else out)
    # in place when asked and y is contiguous: each program loads its y before storing it
    y_final = y0 if inplace and y0 is y else torch.empty(S, dtype=dtype, device=device)
    N = y_final.numel()
    counts = None
    if N > 0:
        nprog = triton.cdiv(N, _TRITON_BLOCK)
        partial = torch.empty((Tc, nprog) if spikes is not None else (1,), dtype=torch.int32, device=device)
        scale_mode = 0 if mode != "kernel" else (1 if scale_len == 1 else 2)
        kernel[(nprog,)](tgt, y0, eta, scale if scale_mode else y0, res, y_final, partial,
                         Tc, N, max(scale_len, 1), SCALE_MODE=scale_mode, COUNT=spikes is not None,
                         BLOCK=_TRITON_BLOCK, num_warps=_TRITON_WARPS)
        if spikes is not None:
            counts = partial.sum(1, dtype=torch.int64)
    elif spikes is not None:
        counts = torch.zeros(Tc, dtype=torch.int64, device=device)
    if aliased:
        res, y_final = _finish(res, y_final, out_scale, mode, counts, spikes, None)
        return out.copy_(res), y_final
    return _finish(res, y_final, out_scale, mode, counts, spikes, out)
