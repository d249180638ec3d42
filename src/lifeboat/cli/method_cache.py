"""Compiled dataclass methods, kept beside lifeboat's bytecode so that a command's start-up
does not compile them again.

Every ``@dataclass`` makes its ``__init__``, ``__repr__``, ``__eq__`` (and, when frozen,
``__setattr__``, ``__delattr__`` and ``__hash__``) by compiling generated source with
``exec``. Before `wal push` does anything, the modules it imports have defined ~120 such
classes: ~560 compilations, 40-60 ms of its ~130 ms on the 2-core VM this was measured on.
The build (`make bytecode`, ``python -m lifeboat.cli.method_cache``) imports every lifeboat
module and records each generated source with its code object, by the module that defines
the class, in ``lifeboat/__pycache__/dataclass-methods.<tag>.marshal``. ``install`` has
``dataclasses`` look each source up there (a module's part is decoded when it first defines
a class) and compile only what is not recorded, exactly as it would have.

The file is trusted as the ``.pyc`` files beside it are: whoever can write them can already
run code as lifeboat. So it is read from the package's own ``__pycache__`` only, never from a
cache or state directory; it is never written while a command runs; and it is ignored when
another interpreter build made it (its header is ``sys.version``), when it does not match
its checksum (``marshal`` reserves what a damaged length asks for before it reads a byte),
under ``-O``, and when bytecode is kept elsewhere (``PYTHONPYCACHEPREFIX``: the package's
``__pycache__`` is then no longer what the interpreter trusts).
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import struct
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from types import CodeType
from typing import Any

import lifeboat

_HEADER = sys.version.encode() + b"\0"  # the interpreter build whose code objects these are
_CHECK = struct.Struct("<QI")  # the payload's length and CRC-32, after the header


def cache_file() -> Path:
    """Where the build leaves the recorded methods: beside the package's bytecode."""
    name = f"dataclass-methods.{sys.implementation.cache_tag}.marshal"
    return Path(lifeboat.__file__).parent / "__pycache__" / name


def _compiled(source: str) -> CodeType:
    # As ``exec(source)`` inside ``dataclasses`` compiles it: with no __future__ flag, not
    # this module's own (``annotations`` would leave every generated signature's
    # annotations as strings, which typer and pydantic read).
    return compile(source, "<string>", "exec", dont_inherit=True)


def _module_of(namespace: dict[str, Any] | None) -> str:
    return str(namespace.get("__name__", "")) if namespace else ""


class MethodTable:
    """The recorded code objects, by defining module and generated source. ``exec`` stands
    in for the builtin in ``dataclasses``."""

    def __init__(self, parts: dict[str, bytes]) -> None:
        self._parts = parts  # module -> its marshalled {source: code}, decoded on first use
        self._modules: dict[str, dict[str, CodeType]] = {}
        self.hits = 0
        self.misses = 0

    def exec(self, source: Any, namespace: dict[str, Any] | None = None, local: Any = None) -> None:
        code = self._code_for(_module_of(namespace), source) if isinstance(source, str) else None
        if code is None:
            self.misses += 1
            code = _compiled(source) if isinstance(source, str) else source
        else:
            self.hits += 1
        exec(code, namespace, local)

    def _code_for(self, module: str, source: str) -> CodeType | None:
        codes = self._modules.get(module)
        if codes is None:
            codes = self._modules[module] = _decoded(self._parts.get(module))
        return codes.get(source)


def _decoded(part: bytes | None) -> dict[str, CodeType]:
    """One module's recorded methods; nothing when the part is missing or not a table of
    code objects."""
    if part is None:
        return {}
    try:
        codes = marshal.loads(part)
    except Exception:  # checked as a whole already: a part of another layout
        return {}
    if not isinstance(codes, dict):
        return {}
    return {s: c for s, c in codes.items() if isinstance(s, str) and isinstance(c, CodeType)}


def install(path: Path | None = None) -> MethodTable | None:
    """Has every dataclass defined from now on take its methods from the build's record;
    the table (its hits and misses), or None when there is none to use."""
    if sys.flags.optimize or sys.pycache_prefix or "exec" in vars(dataclasses):  # or installed already
        return None
    try:
        data = (path or cache_file()).read_bytes()
    except OSError:
        return None
    payload = _checked_payload(data)
    if payload is None:
        return None
    try:
        parts = marshal.loads(payload)
    except Exception:
        return None
    if not isinstance(parts, dict) or not all(isinstance(p, bytes) for p in parts.values()):
        return None
    table = MethodTable(parts)
    dataclasses.exec = table.exec  # type: ignore[attr-defined]  # found before the builtin
    return table


def _checked_payload(data: bytes) -> memoryview | None:
    """The record's payload when the header is this interpreter's and the payload has the
    length and CRC-32 written with it."""
    start = len(_HEADER) + _CHECK.size
    if len(data) < start or not data.startswith(_HEADER):
        return None
    length, crc = _CHECK.unpack_from(data, len(_HEADER))
    payload = memoryview(data)[start:]
    return payload if len(payload) == length and zlib.crc32(payload) == crc else None


def _sealed(payload: bytes) -> bytes:
    return _HEADER + _CHECK.pack(len(payload), zlib.crc32(payload)) + payload


class _Recorder:
    """``exec`` for ``dataclasses`` while the build imports every module: compiles, runs and
    keeps each generated source's code."""

    def __init__(self) -> None:
        self.modules: dict[str, dict[str, CodeType]] = {}

    def exec(self, source: Any, namespace: dict[str, Any] | None = None, local: Any = None) -> None:
        if isinstance(source, str):
            code = _compiled(source)
            self.modules.setdefault(_module_of(namespace), {})[source] = code
            source = code
        exec(source, namespace, local)


def _every_module() -> list[str]:
    """The names of lifeboat's modules (``__main__`` aside: importing it runs the command)."""
    import pkgutil  # the build's alone: a command's start-up needs it not

    return [
        module.name
        for module in pkgutil.walk_packages(lifeboat.__path__, "lifeboat.")
        if module.name.rsplit(".", 1)[-1] != "__main__"
    ]


# imported before the build can begin (they define no dataclass)
_IMPORTED_FIRST = frozenset({"lifeboat.cli", "lifeboat.cli.method_cache"})


def build(path: Path | None = None, modules: Iterable[str] | None = None) -> tuple[int, list[str]]:
    """Imports ``modules`` (every lifeboat module by default) and records the methods of
    every dataclass they, and what they import, define, into ``path`` (the package's cache
    file by default): (methods recorded, modules not recorded: imported before the build
    began, which a fresh interpreter avoids, or not importable here)."""
    import importlib
    import tempfile

    if sys.flags.optimize:
        raise SystemExit("the method cache is built without -O")
    recorder = _Recorder()
    made_before = set(sys.modules) - _IMPORTED_FIRST  # their classes are made already
    failed: list[str] = []
    installed = vars(dataclasses).get("exec")  # a table this process runs with stays
    dataclasses.exec = recorder.exec  # type: ignore[attr-defined]
    try:
        for name in _every_module() if modules is None else modules:
            if name in made_before:
                failed.append(name)
                continue
            try:
                importlib.import_module(name)
            except Exception:  # an optional part that does not import here: compiled at run time
                failed.append(name)
    finally:
        if installed is None:
            del dataclasses.exec  # type: ignore[attr-defined]
        else:
            dataclasses.exec = installed  # type: ignore[attr-defined]
    parts = {module: marshal.dumps(codes) for module, codes in recorder.modules.items()}
    target = path or cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with open(fd, "wb") as out:
            out.write(_sealed(marshal.dumps(parts)))
        os.chmod(temporary, 0o644)  # read by every user lifeboat runs as (archive_command's postgres)
        os.replace(temporary, target)  # a command starting meanwhile reads the old file or the new
    except BaseException:
        os.unlink(temporary)
        raise
    return sum(len(codes) for codes in recorder.modules.values()), failed


if __name__ == "__main__":
    count, not_imported = build()
    print(f"{count} dataclass methods recorded in {cache_file()}")
    for name in not_imported:
        print(f"not imported: {name}", file=sys.stderr)
