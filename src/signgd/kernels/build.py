"""Compiling the C kernel (``_csrc/signgd_scan.c``) into a shared library, and its cache.

The library is built on first use with the system C compiler (``$CC``, ``gcc`` or ``cc``) and
cached in ``$SIGNGD_CACHE`` (default ``~/.cache/signgd/kernels``), keyed by a hash of the source,
the compiler and its flags (and the CPU's instruction set for a ``-march=native`` build). A build
is compiled under a temporary name in the cache directory and renamed atomically, so concurrent
processes never load a half-written library. This module only compiles and finds files: loading
the library (ctypes) and checking it against the torch reference are ``c.py``'s.

Why a plain C file built by gcc and loaded with ctypes, not ``torch.utils.cpp_extension``: the
kernel needs nothing from torch (it takes raw pointers and lengths), so it compiles without torch's
headers, a C++ toolchain or ninja, in about two seconds (``gcc -O3 -fopenmp``, measured here:
1.3 s of CPU). A ``cpp_extension`` build of even a one-line function including
``torch/extension.h`` took 31 s on the same machine (ninja and the headers were present), would be
repeated for every torch version, and fails outright where ninja or a C++ compiler is missing;
users of the CPU backend would pay that on first use. The price of ctypes is that arguments are
passed untyped, so ``c.py`` declares every signature and checks each build against the torch
reference when it loads it.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SOURCE", "COMPILER", "BASE_FLAGS", "NATIVE_FLAGS", "ENV_CACHE", "cache_dir", "find_compiler",
           "build_and_load"]

ENV_CACHE = "SIGNGD_CACHE"
SOURCE = Path(__file__).resolve().parent / "_csrc" / "signgd_scan.c"
#: The C compiler: None tries ``$CC``, then ``gcc``, then ``cc``. Tests point it at a missing program.
COMPILER: str | None = None
#: Flags for every build. No -ffast-math, and no FMA contraction: results must match torch bit for bit.
BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=gnu99", "-ffp-contract=off", "-fno-fast-math")
#: Tried first; dropped when the compiler rejects them.
NATIVE_FLAGS = ("-march=native",)
COMPILE_TIMEOUT_S = 300
#: Part of every cache key: bump it to make every cached library stale.
CACHE_VERSION = "2"


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "signgd" / "kernels"


def find_compiler() -> str | None:
    names = [COMPILER] if COMPILER is not None else [os.environ.get("CC"), "gcc", "cc"]
    for name in names:
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def cpu_id() -> str:
    """Identifies the CPU's instruction set, so a -march=native build in a shared cache directory
    is not reused on a different kind of machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def library_path(cache: Path, source: bytes, compiler: str, flags) -> Path:
    """Where the library built from ``source`` by ``compiler`` with ``flags`` is cached."""
    key = hashlib.sha256()
    for part in (CACHE_VERSION, source, os.path.realpath(compiler), " ".join(flags),
                 cpu_id() if NATIVE_FLAGS and set(NATIVE_FLAGS) <= set(flags) else ""):
        key.update(part if isinstance(part, bytes) else part.encode())
        key.update(b"\0")
    return cache / f"signgd_scan-{key.hexdigest()[:20]}.so"


def build_and_load(load):
    """Build (or find in the cache) the library and load it: ``(library, info)``, or
    ``(None, {"reason": ...})``.

    ``load(path)`` returns ``(library, None)`` or ``(None, why not)``. The flags with
    ``NATIVE_FLAGS`` are tried first; when they fail to compile, or their library fails to load,
    the build without them is tried. ``info``: the library's path, flags and compiler.
    """
    compiler = find_compiler()
    if compiler is None:
        wanted = COMPILER if COMPILER is not None else "$CC, gcc or cc"
        return None, {"reason": f"no C compiler found ({wanted})"}
    try:
        source = SOURCE.read_bytes()
    except OSError as e:
        return None, {"reason": f"cannot read the kernel source {SOURCE}: {e}"}
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return None, {"reason": f"cannot create the cache directory {cache}: {e}"}
    errors = []
    for flags in (BASE_FLAGS + NATIVE_FLAGS, BASE_FLAGS):
        path = library_path(cache, source, compiler, flags)
        if not path.exists():
            err = compile_library(compiler, flags, path)
            if err is not None:
                errors.append(err)
                continue
        lib, err = load(path)
        if lib is None:
            errors.append(err)
            continue
        return lib, {"path": str(path), "flags": list(flags), "compiler": compiler}
    return None, {"reason": "; ".join(errors) or "unknown", "compiler": compiler}


def compile_library(compiler, flags, path: Path) -> str | None:
    """Compile into a temporary name in the cache directory, then rename atomically. None, or
    what went wrong."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so.tmp", dir=path.parent)
    os.close(fd)
    cmd = [compiler, *flags, str(SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
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
