"""Outside `assets/`, no code names an asset kind: it asks the kind's plug-in (issue #17).

A new data class is one package under `assets/` plus a registry line; a `kind == "..."`
switch or an import of a kind's internals elsewhere would be a place it silently misses.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lifeboat
from lifeboat.assets.registry import KINDS, plugin

SRC = Path(lifeboat.__file__).parent
KIND_NAMES = set(KINDS)
# Verbs that exist only for one kind (their names say so): `wal`/`pg` for PostgreSQL,
# `objects inspect` and `backup/restore --shards` for buckets, the sandbox's demo
# platform, the policy wizard's detection of a server or bucket, and the exported
# shard-worker jobs. Each may use its own kind's modules; nothing else may.
KIND_OWN_MODULES = {
    "cli/wal_cmd.py": "postgres",
    "cli/wal_run.py": "postgres",
    "cli/policy_slice.py": "postgres",
    "cli/pg_cmd.py": "postgres",
    "cli/objects_cmd.py": "objects",
    "cli/shards_cmd.py": "objects",
    "cli/backup_cmd.py": "postgres",  # pagecheck's bad-page report after a base backup
    "ops/policy_init.py": "postgres",
    "ops/export.py": "objects",
    "sandbox/platform.py": "postgres",
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+lifeboat\.assets\.(\w+)")


def _outside_assets() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "assets")


def _kind_comparisons(path: Path, root: Path = SRC) -> list[str]:
    """`x.kind == "postgres"`, `kind != "objects"`, `kind in {"keys", ...}` and the like."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        names = {
            value
            for operand in operands
            for sub in ast.walk(operand)
            if isinstance(sub, ast.Constant) and isinstance(value := sub.value, str)
        }
        mentions_kind = any(
            (isinstance(sub, ast.Attribute) and sub.attr == "kind")
            or (isinstance(sub, ast.Name) and sub.id == "kind")
            for operand in operands
            for sub in ast.walk(operand)
        )
        if mentions_kind and names & KIND_NAMES:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_kind_is_compared_by_name_outside_assets() -> None:
    found = [line for path in _outside_assets() for line in _kind_comparisons(path)]
    assert found == [], "switch on a kind name outside assets/ (add a plug-in hook):\n" + "\n".join(found)


def test_no_kind_internals_are_imported_outside_assets() -> None:
    found = []
    for path in _outside_assets():
        rel = str(path.relative_to(SRC))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = IMPORT.match(line)
            if match and match.group(1) in KIND_NAMES and KIND_OWN_MODULES.get(rel) != match.group(1):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "import of a kind's internals outside assets/ (use the registry):\n" + "\n".join(
        found
    )


def test_the_checks_would_catch_a_switch(tmp_path: Path) -> None:
    """The scanners see what they are meant to (else the tests above pass vacuously)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        'if asset.kind == "postgres":\n    pass\nok = spec.kind in ("objects", "keys")\n'
        'fine = asset.name == "postgres"\nalso = kind != "files"\n'
    )
    assert [line.split(":")[1] for line in _kind_comparisons(sample, tmp_path)] == ["1", "3", "5"]
    assert IMPORT.match("    from lifeboat.assets.postgres.wal import namespace").group(1) == "postgres"  # type: ignore[union-attr]


def _kind_literals(path: Path, allowed: set[str], root: Path = SRC) -> list[str]:
    """String constants equal to a kind's name, other than those in `allowed`."""
    return [
        f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if node.value in KIND_NAMES - allowed
    ]


def _policy_file_keys() -> set[str]:
    """The keys of the policy file's tables (the cross-checks' `objects = "..."` is one)."""
    import lifeboat.policy as policy

    return {
        key
        for value in vars(policy).values()
        if isinstance(value, type) and issubclass(value, policy.Section)
        for key in value.model_fields
    }


def test_the_policy_names_no_kind() -> None:
    """The policy validates each asset with the model the registry supplies: a kind's name
    written in it would be a kind it treats specially, and a new kind would be missed."""
    modules = [SRC / f"{name}.py" for name in ("policy", "policy_file", "policy_values")]
    found = [line for path in modules for line in _kind_literals(path, _policy_file_keys())]
    assert found == [], "a kind's name in the policy (ask the asset models):\n" + "\n".join(found)


def test_the_literal_check_would_catch_a_kind_name(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('ROLE = "postgres"\nwhere = f"{x}.objects"\nkey = ("objects", 1)\n')
    assert _kind_literals(sample, set(), tmp_path) == ["sample.py:1: 'postgres'", "sample.py:3: 'objects'"]
    assert _kind_literals(sample, {"objects"}, tmp_path) == ["sample.py:1: 'postgres'"]
    assert "objects" in _policy_file_keys() and "files" not in _policy_file_keys()


def test_every_registered_kind_loads_and_names_itself() -> None:
    for name in KINDS:
        assert plugin(name).name == name


def test_asking_every_plug_in_loads_no_database_or_s3_client() -> None:
    """`wal push` runs per WAL segment and consults the registry: psycopg and boto3 stay out."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from lifeboat.assets.registry import KINDS, plugin, restore_option_kinds\n"
        "kinds = [plugin(k) for k in KINDS]\n"
        "assert restore_option_kinds('lsn') == ['postgres'], restore_option_kinds('lsn')\n"
        "print(sorted(m for m in ('psycopg', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


DOCUMENTED_PACKAGES = ("services", "assets", "repo", "drills", "daemon")


def _undocumented(path: Path) -> list[str]:
    """The module, or a public class, function or method of it, without a docstring."""
    tree = ast.parse(path.read_text())
    missing = [] if ast.get_docstring(tree) else [f"{path.relative_to(SRC)}: module"]
    for node in tree.body:
        defs = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else []
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            defs += [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        missing += [
            f"{path.relative_to(SRC)}:{d.lineno}: {d.name}"
            for d in defs
            if not d.name.startswith("_") and not ast.get_docstring(d)
        ]
    return missing


def test_every_public_definition_of_the_core_packages_says_what_it_is_for():
    missing = [
        line
        for package in DOCUMENTED_PACKAGES
        for path in sorted((SRC / package).rglob("*.py"))
        for line in _undocumented(path)
    ]
    assert missing == [], "no docstring:\n" + "\n".join(missing)


NEW_KIND = {
    "__init__.py": '"""A kind added the documented way (docs/design/internals.md)."""\n',
    "model.py": (
        "from pathlib import Path\n"
        "from typing import Literal\n\n"
        "from lifeboat.policy import AssetBase\n\n\n"
        "class RedisAsset(AssetBase):\n"
        '    kind: Literal["redis"]\n'
        "    url: str\n"
        "    rdb: Path\n\n\n"
        "MODEL = RedisAsset\n"
    ),
    "plugin.py": (
        "from lifeboat.assets.kind import AssetKind\n\n\n"
        "class RedisKind(AssetKind):\n"
        '    name = "redis"\n\n\n'
        "PLUGIN = RedisKind()\n"
    ),
}
NEW_KIND_POLICY = """
[repository]
url = "file:///nonexistent/repo"
[classes.standard]
rpo = "1d"
rto = "1h"
[assets.cache]
kind = "redis"
class = "standard"
url = "redis://127.0.0.1:6379"
{rdb} = "/var/lib/redis/dump.rdb"
"""


def test_a_new_kind_is_one_package_plus_a_registry_line(tmp_path: Path, monkeypatch) -> None:
    """The worked example of internals.md holds: a package with `model.py` and `plugin.py`
    and one `KINDS` line, and a policy naming the kind is validated by its model."""
    import pytest

    from lifeboat.assets import registry
    from lifeboat.errors import ConfigError

    package = tmp_path / "lifeboat_redis_kind"
    package.mkdir()
    for name, text in NEW_KIND.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_models", {})
    monkeypatch.setattr(registry, "_loaded", {})
    monkeypatch.setitem(registry.KINDS, "redis", "lifeboat_redis_kind")  # the registry line

    config = tmp_path / "lifeboat.toml"
    config.write_text(NEW_KIND_POLICY.format(rdb="rdb"))
    policy = registry.load_policy(config)
    asset = policy.asset("cache")
    assert type(asset).__name__ == "RedisAsset"
    assert asset.model_dump()["rdb"] == Path("/var/lib/redis/dump.rdb")
    assert registry.kind_of(asset).name == "redis"

    config.write_text(NEW_KIND_POLICY.format(rdb="rdbb"))  # the model's own keys are checked
    with pytest.raises(ConfigError) as typo:
        registry.load_policy(config)
    assert typo.value.message.endswith("assets.cache.rdbb: unknown key (and 1 more)")

    config.write_text(NEW_KIND_POLICY.format(rdb="rdb").replace('"redis"', '"redix"'))
    with pytest.raises(ConfigError) as unknown:
        registry.load_policy(config)
    assert unknown.value.message.endswith(
        "assets.cache: unknown kind 'redix' (known: files, postgres, objects, keys, redis)"
    )
