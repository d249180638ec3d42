"""Object keys a directory cannot hold (a 1,000-byte path segment; both `docs` and
`docs/inner.txt`) are found before anything is written: `--dry-run` lists them and a
restore to dir:// refuses up front, naming them shortened."""

from __future__ import annotations

import json

from tests.objects.test_objects import ObjectsEnv, env  # noqa: F401  (a fixture)

LONG = "long/" + "a" * 1000 + ".bin"


def test_unmappable_keys_are_listed_by_dry_run_and_refused_before_any_write(env: ObjectsEnv) -> None:  # noqa: F811
    env.put("docs", b"a file named like a directory")
    env.put("docs/inner.txt", b"inside it")
    env.put(LONG, b"x" * 10)
    env.put("fine/ok.txt", b"ok")
    snap = env.json("backup", "media")[0]["snapshot"]
    target = env.root / "restored"
    restore = ("restore", "media", "--snapshot", snap, "--target", f"dir://{target}")

    dry = env.run(*restore, "--dry-run", "--json", check=False)
    plan = json.loads(dry.stdout)["plan"]
    assert dry.returncode == 1 and not json.loads(dry.stdout)["ok"]
    assert len(plan["unmappable"]) == 2
    assert any(p.startswith("docs/inner.txt: docs is also an object") for p in plan["unmappable"])
    assert any("longer than 255 bytes" in p and "(1009 chars)" in p for p in plan["unmappable"])

    proc = env.run(*restore, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("lifeboat: error: 2 keys cannot be files under dir://")
    assert "docs/inner.txt" in lines[0] and "a" * 100 not in proc.stderr  # named, shortened
    assert "attempts" not in proc.stderr and "internal error" not in proc.stderr
    assert not target.exists()  # nothing written
