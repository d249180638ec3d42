"""What `status` reads of a policy (ops/status_view.py): built from a validated policy, kept
as JSON in the state dir, read back unchanged. Pure logic: a policy file, no repository."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lifeboat.assets.kind import StatusQuery
from lifeboat.assets.registry import load_policy
from lifeboat.ops.status_view import StatusView
from tests.harness import PolicyBuilder


def _policy(tmp_path: Path) -> Path:
    return (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .state(tmp_path / "state")
        .data_class("gold", rpo="5m", rto="30m", drill_every="7d", success_target=0.95, key_max_age="90d")
        .data_class("standard", rpo="1d", rto="4h")
        .postgres(
            "remote", dsn="host=db1.internal port=5433 dbname=app password=s3cret", cls="gold", stream=True
        )
        .postgres("local", dsn="host=/var/run/postgresql dbname=app", cls="gold", host="rack-7")
        .postgres("socket", dsn="dbname=app")
        .files("docs", [tmp_path])
        .drill("weekly", "pg-pitr", assets=["remote"], every="7d", evidence_dir="evidence")
        .drill("monthly", "full-outage")
        .drill("pitr", "pg-pitr")
        .drill("docs-pitr", "pg-pitr", assets=["docs", "local"])
        .write(tmp_path / "lifeboat.toml")
    )


def test_the_view_holds_the_targets_hosts_and_status_settings(tmp_path: Path) -> None:
    view = StatusView.of(load_policy(_policy(tmp_path)))
    gold = view.classes["gold"]
    assert (gold.rpo, gold.rto, gold.drill_every) == (
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(days=7),
    )
    assert (gold.success_target, gold.key_max_age) == (0.95, timedelta(days=90))
    # the dsn's host, the policy's host, this machine (None) for a socket or no host
    assert {name: a.host for name, a in view.assets.items()} == {
        "remote": "db1.internal",
        "local": "rack-7",
        "socket": None,
        "docs": None,
    }
    remote = view.assets["remote"]
    assert (remote.kind, remote.class_) == ("postgres", "gold")
    assert remote.settings == {
        "dsn": "host=db1.internal port=5433 dbname=app password=s3cret",
        "stream": True,
    }
    assert view.assets["docs"].settings == {}  # the files kind asks nothing of its source
    assert "s3cret" not in repr(view)  # settings are kept out of reprs (and so of logs)
    query = StatusQuery(None, "remote", remote.settings, [], [])  # type: ignore[arg-type]
    assert "s3cret" not in repr(query)  # nor of what a kind's status hook is handed
    assert view.drill_assets("weekly") == ["remote"]
    assert view.drill_assets("monthly") == ["remote", "local", "socket", "docs"]  # none named: all
    # of those, the ones whose kind has the scenario, as the drill's runner restores them: a
    # pg-pitr drill's failure is no breach for the files asset it never restores
    assert view.drill_assets("pitr") == ["remote", "local", "socket"]
    assert view.drill_assets("docs-pitr") == ["local"]
    assert view.drill_assets("gone") == []


def test_a_view_read_back_from_json_is_the_same_view(tmp_path: Path) -> None:
    view = StatusView.of(load_policy(_policy(tmp_path)))
    assert StatusView.from_json(view.to_json()) == view


def test_how_long_a_corrective_action_may_stay_open(tmp_path: Path) -> None:
    view = StatusView.of(load_policy(_policy(tmp_path)))
    assert view.action_period("drill weekly", "remote") == timedelta(days=7)  # the asset's class
    assert view.action_period("drill weekly", "socket") == timedelta(days=30)  # standard's default
    assert view.action_period("drill weekly", None) == timedelta(days=7)  # the drill's period
    assert view.action_period("drill gone", "not-an-asset") == timedelta(days=30)
