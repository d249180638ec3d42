"""Dataclass methods compiled once by the build and taken from its record when a command
starts (lifeboat/cli/method_cache.py). Real interpreters, real files: a class made from the
record behaves exactly as one compiled anew, a class changed since the build is compiled
anew, a record that another interpreter made or that is damaged is not used, and the real
commands compile none of lifeboat's dataclass methods."""

from __future__ import annotations

import json
import marshal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lifeboat.cli import method_cache
from tests.cli.conftest import cli_for, write_policy

# No `from __future__ import annotations` here: the generated `__init__` then evaluates its
# annotations, and one compiled with the wrong flags would keep them as strings.
SAMPLE = """
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import ClassVar

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple = ()

@dataclass(order=True)
class Job:
    name: str
    retries: int = 3
    labels: dict = field(default_factory=dict)
    kind: ClassVar[str] = "job"

@dataclass(kw_only=True, eq=False)
class Options:
    verbose: bool = False
    path: str = "."

@dataclass(slots=True)
class Slotted:
    a: int
    seed: InitVar[int] = 1
    _: KW_ONLY
    b: list = field(default_factory=list)

    def __post_init__(self, seed):
        self.b.append(seed)
"""

DESCRIBE = """
import dataclasses, inspect, json, sys, types
from pathlib import Path
sys.path.insert(0, sys.argv[1])
table = None
if len(sys.argv) > 2:
    from lifeboat.cli import method_cache
    table = method_cache.install(Path(sys.argv[2]))
import sample
point = sample.Point(1, 2, ("a",))
try:
    point.x = 5
    frozen = "assigned"
except dataclasses.FrozenInstanceError as exc:
    frozen = type(exc).__name__
first, second = sample.Job("a"), sample.Job("b", 1)
first.labels["k"] = "v"
classes = (sample.Point, sample.Job, sample.Options, sample.Slotted)

def code(c):  # what a code object is made of (its constants' code described the same way)
    return [c.co_code.hex(), c.co_flags, c.co_filename, c.co_firstlineno, c.co_linetable.hex(),
            c.co_name, c.co_qualname, c.co_names, c.co_varnames,
            [code(k) if isinstance(k, types.CodeType) else repr(k) for k in c.co_consts]]

def methods(cls):
    return {name: [code(inspect.unwrap(f).__code__), inspect.unwrap(f).__qualname__]
            for name, f in sorted(vars(cls).items()) if isinstance(f, types.FunctionType)}
print(json.dumps({
    "repr": [repr(point), repr(first), repr(sample.Options(verbose=True))],
    "eq": [point == sample.Point(1, 2, ("a",)), point == sample.Point(1, 3),
           sample.Options() == sample.Options()],
    "hash": hash(point) == hash(sample.Point(1, 2, ("a",))),
    "order": sorted([second, first]) == [first, second],
    "frozen": frozen,
    "fresh_default": sample.Job("c").labels,
    "signatures": [str(inspect.signature(c)) for c in classes],
    "annotations": [repr(c.__init__.__annotations__) for c in classes],
    "extra": vars(sample.Point(1)).get("z"),
    "slotted": [repr(sample.Slotted(1, 5, b=[0])), sample.Slotted(2).b,
                hasattr(sample.Slotted(2), "__dict__")],
    "methods": [methods(c) for c in classes],
    "table": None if table is None else [table.hits, table.misses],
}))
"""


def run_python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def build(where: Path, cache: Path) -> None:
    """The build's record of the sample module, made in a fresh interpreter."""
    run_python(
        "import sys; from pathlib import Path; from lifeboat.cli import method_cache\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "count, failed = method_cache.build(Path(sys.argv[2]), ['sample'])\n"
        "assert count and not failed, (count, failed)",
        str(where),
        str(cache),
    )


def describe(where: Path, cache: Path | None = None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_python(DESCRIBE, str(where), *([str(cache)] if cache else [])))
    return result


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    (tmp_path / "sample.py").write_text(SAMPLE)
    return tmp_path


def test_a_class_made_from_the_record_behaves_as_one_compiled_anew(sample: Path, tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    build(sample, cache)
    compiled = describe(sample)
    recorded = describe(sample, cache)
    assert compiled.pop("table") is None
    hits, misses = recorded.pop("table")
    assert misses == 0 and hits >= 3  # every method of the three classes from the record
    assert recorded == compiled
    # evaluated annotations, not the strings a method compiled with this module's (or the
    # cache module's) __future__ flags would keep
    assert "'return': None" in recorded["annotations"][0] and "<class 'int'>" in recorded["annotations"][0]
    assert recorded["frozen"] == "FrozenInstanceError" and recorded["fresh_default"] == {}
    assert recorded["slotted"] == ["Slotted(a=1, b=[0, 5])", [1], False]
    assert all(recorded["methods"]) and "__init__" in recorded["methods"][3]


def test_no_record_is_used_under_optimisation(sample: Path, tmp_path: Path) -> None:
    """-O compiles differently: a record is neither used nor made there."""
    cache = tmp_path / "methods.marshal"
    build(sample, cache)
    describe_optimised = [sys.executable, "-O", "-c", DESCRIBE, str(sample), str(cache)]
    optimised = subprocess.run(describe_optimised, capture_output=True, text=True, timeout=120)
    assert optimised.returncode == 0, optimised.stderr
    assert json.loads(optimised.stdout)["table"] is None
    refused = subprocess.run(
        [sys.executable, "-O", "-m", "lifeboat.cli.method_cache"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "without -O" in refused.stderr


def test_a_class_changed_since_the_build_is_compiled_anew(sample: Path, tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    build(sample, cache)
    changed = SAMPLE.replace("    tags: tuple = ()\n", "    tags: tuple = ()\n    z: int = 9\n")
    (sample / "sample.py").write_text(changed)
    recorded = describe(sample, cache)
    hits, misses = recorded.pop("table")
    assert misses > 0 and hits > 0  # Point's methods compiled anew, Job's and Options' taken
    assert recorded["extra"] == 9 and "z=9" in recorded["repr"][0]
    assert recorded == {k: v for k, v in describe(sample).items() if k != "table"}


HEADER_END = len(sys.version.encode()) + 1 + 12  # sys.version, NUL, payload length and CRC-32


def damage(cache: Path, how: str) -> None:
    data = cache.read_bytes()
    if how == "another interpreter":
        cache.write_bytes(data.replace(sys.version.encode(), sys.version.replace("3.", "4.", 1).encode(), 1))
    elif how == "truncated":
        cache.write_bytes(data[: len(data) // 2])
    elif how == "a flipped byte":
        cache.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif how == "a tuple of 2**31-1 items":  # marshal would reserve 16 GB for it before reading on
        cache.write_bytes(data[:HEADER_END] + b"(" + struct.pack("<i", 2**31 - 1) + data[HEADER_END + 5 :])


DAMAGES = ["another interpreter", "truncated", "a flipped byte", "a tuple of 2**31-1 items"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_record_made_elsewhere_or_damaged_is_not_used(sample: Path, tmp_path: Path, how: str) -> None:
    cache = tmp_path / "methods.marshal"
    build(sample, cache)
    damage(cache, how)
    recorded = describe(sample, cache)
    assert recorded.pop("table") is None  # not installed: every method compiled as before
    assert recorded == {k: v for k, v in describe(sample).items() if k != "table"}


def test_a_damaged_module_part_is_compiled_anew(sample: Path, tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    build(sample, cache)
    cache.write_bytes(method_cache._sealed(marshal.dumps({"sample": b"\x00not marshal"})))
    recorded = describe(sample, cache)
    hits, misses = recorded.pop("table")
    assert hits == 0 and misses > 0
    assert recorded == {k: v for k, v in describe(sample).items() if k != "table"}


COUNT_COMPILES = textwrap.dedent(
    """
    import atexit, sys
    compiled = []

    def hook(event, args):
        source = args[0] if event == "compile" else None  # exec of a string gives its bytes
        if isinstance(source, str):
            source = source.encode()
        if not isinstance(source, bytes) or b"def __create_fn__" not in source:
            return
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "_process_class":
            frame = frame.f_back
        if frame is not None:
            compiled.append(frame.f_locals["cls"].__module__)

    sys.addaudithook(hook)
    atexit.register(lambda: sys.stderr.write("compiled:" + ",".join(compiled) + "\\n"))
    from lifeboat.cli.entry import main
    main()
    """
)


def test_the_commands_compile_none_of_lifeboats_dataclass_methods(tmp_path: Path) -> None:
    """What `make bytecode` does (it replaces the package's record, in one rename, while
    other tests' commands may be starting), then real commands in fresh interpreters (not
    the fork server, whose classes are made already), each watched for a generated method
    being compiled (the interpreter's audit event)."""
    built = subprocess.run(
        [sys.executable, "-m", "lifeboat.cli.method_cache"], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0 and not built.stderr, built.stderr
    assert method_cache.cache_file().stat().st_size > 100_000
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    cli = cli_for(write_policy(tmp_path, source, f"file://{tmp_path / 'repo'}"), tmp_path, source)
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    for args in (["backup"], ["status", "--json"], ["snapshots", "--json"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-c", COUNT_COMPILES, "--config", str(cli.policy), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli.environment(),
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("compiled:")]
        assert len(lines) == 1, done.stderr
        ours = [m for m in lines[0].removeprefix("compiled:").split(",") if m.startswith("lifeboat")]
        assert ours == [], (args, ours)
        assert done.returncode in (0, 1), done.stderr  # status: 1 when a target is breached
