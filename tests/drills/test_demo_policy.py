"""The sandbox models a policy an SRE would copy: it passes its own `policy check`."""

from __future__ import annotations

import json


def test_the_demo_policy_passes_its_own_online_check(demo):
    # the demo runs `lifeboat policy check` (live server settings, bucket, repository) while
    # the platform is up, and stops with an error if it finds anything, warnings included
    assert "lifeboat policy check: exit 0, 3 assets ok, no warnings" in demo.output


def test_the_demo_policy_targets_are_feasible(demo):
    proc = demo.run("policy", "check", "--offline", "--json", check=False)
    report = json.loads(proc.stdout)
    # after the demo's outage only what it destroyed is missing; every target is feasible
    destroyed = ("pgdata", "platform/keys does not exist")
    sandbox_notes = ("is plain http (allow_insecure_http = true)", "is a filesystem repository")
    destroyed += sandbox_notes
    assert [f for f in report["findings"] if not any(d in f["message"] for d in destroyed)] == []
    assert {a["asset"]: a["class"] for a in report["assets"]} == {
        "maindb": "critical",
        "media": "important",
        "platform-keys": "keys",
    }


def test_the_piped_demo_output_keeps_long_lines_whole(demo):
    # the fixture captured `lifeboat demo` through a pipe: nothing was re-wrapped at 80 columns
    bundle = next(line for line in demo.output.splitlines() if line.startswith("evidence bundle: "))
    assert len(bundle) > 80 and bundle.endswith(")") and "lifeboat evidence verify /" in bundle
    assert all(not line.startswith("/") for line in demo.output.splitlines())  # no path split off
