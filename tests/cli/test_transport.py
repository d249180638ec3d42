"""Plain-http endpoints are refused unless a section opts in; `policy check` says so."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import LifeboatCli

POLICY = """
[repository]
url = "s3://backups/lifeboat"
endpoint_url = "{repo_endpoint}"
{repo_extra}

[classes.standard]
rpo = "1d"
rto = "4h"

[assets.media]
kind = "objects"
class = "standard"
source = "s3://media"
endpoint_url = "{media_endpoint}"
schedule = "0 3 * * *"
{media_extra}
"""


def run(tmp_path: Path, *args: str, **fields: str) -> subprocess.CompletedProcess[str]:
    values = {"repo_endpoint": "https://s3.example", "media_endpoint": "https://s3.example"}
    values |= {"repo_extra": "", "media_extra": ""} | fields
    (tmp_path / "lifeboat.toml").write_text(POLICY.format(**values))
    return LifeboatCli(tmp_path / "lifeboat.toml", timeout=60).run(*args, check=False)


@pytest.mark.parametrize(
    ("field", "section"), [("repo_endpoint", "repository"), ("media_endpoint", "assets.media")]
)
@pytest.mark.parametrize("verb", [["policy", "check", "--offline"], ["backup"]])
def test_plain_http_endpoint_is_refused(tmp_path: Path, field: str, section: str, verb: list[str]) -> None:
    proc = run(tmp_path, *verb, **{field: "http://s3.example:9000?token=x"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifeboat: error: "), proc.stderr
    assert f"{section}: endpoint_url 'http://s3.example:9000' is plain http" in lines[0]
    assert "allow_insecure_http = true" in lines[0] and "token=x" not in proc.stderr


@pytest.mark.parametrize(
    ("field", "section"), [("repo_endpoint", "repository"), ("media_endpoint", "assets.media")]
)
@pytest.mark.parametrize("verb", [["policy", "check", "--offline"], ["backup"], ["status"]])
@pytest.mark.parametrize(
    "endpoint",
    [
        "https://key:canary-secret@s3_store:9000?token=x",
        "https://key:canary?secret@s3_store:9000",  # a ? in the password
        "https://s3.example:9000\\t",  # a tab: urlsplit drops it, botocore refuses it
    ],
)
def test_an_endpoint_that_is_no_url_is_refused_when_the_policy_is_read(
    tmp_path: Path, field: str, section: str, verb: list[str], endpoint: str
) -> None:
    """boto refuses a host with an underscore with a ValueError when the client is made:
    that was a traceback of `status`, after the policy had passed."""
    proc = run(tmp_path, *verb, **{field: endpoint})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifeboat: error: "), proc.stderr
    assert f"{section}: endpoint_url 'https://" in lines[0] and "is not an endpoint URL" in lines[0]
    assert "canary" not in proc.stderr + proc.stdout and "token=x" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"AWS_ENDPOINT_URL_S3": "https://key:canary-secret@s3_store:9000"},
            "the S3 endpoint set by AWS_ENDPOINT_URL(_S3) or the profile is not an endpoint URL "
            "(Invalid endpoint)",
        ),
        # botocore's InvalidRegionError is a ValueError too: not said as the endpoint's
        ({"AWS_DEFAULT_REGION": "bad region!"}, "the S3 region 'bad region!' is not a region name"),
    ],
)
def test_an_endpoint_or_region_from_the_environment_that_botocore_refuses_is_one_line(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    """botocore also takes the endpoint from AWS_ENDPOINT_URL_S3 (or a profile), and the
    region from AWS_DEFAULT_REGION, which the policy never sees: its ValueError was an
    internal error (exit 70)."""
    policy = tmp_path / "lifeboat.toml"
    without_endpoints = POLICY.split("[assets.media]")[0].replace('endpoint_url = "{repo_endpoint}"\n', "")
    policy.write_text(without_endpoints.format(repo_extra=""))
    proc = LifeboatCli(policy, timeout=60).run("init", check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"lifeboat: error: {said}", proc.stderr
    assert "canary" not in proc.stderr + proc.stdout


def test_allowed_plain_http_is_reported_by_policy_check(tmp_path: Path) -> None:
    proc = run(
        tmp_path,
        "policy",
        "check",
        "--offline",
        "--json",
        repo_endpoint="http://127.0.0.1:9000",
        repo_extra="allow_insecure_http = true",
        media_endpoint="http://127.0.0.1:9001",
        media_extra="allow_insecure_http = true",
    )
    assert proc.returncode == 0, proc.stderr
    findings = {f["asset"]: f for f in json.loads(proc.stdout)["findings"] if "plain http" in f["message"]}
    assert set(findings) == {"repository", "media"} and findings["media"]["level"] == "warn"
    assert "http://127.0.0.1:9001" in findings["media"]["message"]
