"""The repository and each objects source sign with their own credentials (a profile, or
a role assumed through STS), never the process's default chain. moto accepts any key, so
a proxy in front of it records which access key signed each request."""

from __future__ import annotations

import os
import re
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import boto3
import pytest

from tests.harness import LifeboatCli, PolicyBuilder
from tests.harness.stallproxy import relay

REPO_KEY = "AKIAREPOWRITER000001"
MEDIA_KEY = "AKIAMEDIAREADER00001"
DEFAULT_KEY = "AKIADEFAULTCHAIN0001"
ROLE = "arn:aws:iam::123456789012:role/lifeboat-backup"
CREDENTIAL = re.compile(r"Credential=(\w+)(?:%2F|/)")


class SigningRecorder(BaseHTTPRequestHandler):
    """Forwards to moto; records (first path segment or STS action, signing key id)."""

    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)
    moto: ClassVar[str] = ""
    seen: ClassVar[list[tuple[str, str]]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = CREDENTIAL.search(self.headers.get("Authorization", "") + " " + self.path)
        key = match.group(1) if match else "unsigned"
        target = self.path.split("?")[0].strip("/").split("/")[0]
        if b"Action=AssumeRole" in body:
            target = "sts:AssumeRole"
        self.seen.append((target, key))
        _, data = relay(self, self.upstream, body, dict(self.headers.items()))
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture
def recorder(s3_server: str) -> Iterator[str]:
    host, port = s3_server.removeprefix("http://").split(":")
    SigningRecorder.upstream = (host, int(port))
    SigningRecorder.moto = s3_server
    SigningRecorder.seen = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SigningRecorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def aws_files(root: Path) -> dict[str, str]:
    (root / "aws-credentials").write_text(
        f"[repo-writer]\naws_access_key_id = {REPO_KEY}\naws_secret_access_key = repo-secret\n\n"
        f"[media-reader]\naws_access_key_id = {MEDIA_KEY}\naws_secret_access_key = media-secret\n"
    )
    (root / "aws-config").write_text("[default]\nregion = us-east-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | {
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "aws-credentials"),
        "AWS_CONFIG_FILE": str(root / "aws-config"),
        "AWS_ACCESS_KEY_ID": DEFAULT_KEY,  # the chain every section would share before
        "AWS_SECRET_ACCESS_KEY": "default-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def setup(tmp_path: Path, endpoint: str, make_bucket, **repo_auth: str) -> tuple[Path, str, str]:  # type: ignore[no-untyped-def]
    """Buckets seeded straight at moto; the policy points both sections at ``endpoint``."""
    source, repo = make_bucket(object_lock=False), make_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=SigningRecorder.moto)
    for i in range(3):
        s3.put_object(Bucket=source, Key=f"media/img-{i}.jpg", Body=os.urandom(2048))
    policy = (
        PolicyBuilder(mode="production")
        .s3_repository(endpoint, repo, "lb", **repo_auth)
        .data_class("important", rpo="1h", rto="1h")
        .objects(
            "media", f"s3://{source}/media", cls="important", endpoint_url=endpoint, profile="media-reader"
        )
        .write(tmp_path / "lifeboat.toml")
    )
    return policy, source, repo


def lifeboat(policy: Path, env: dict[str, str], *args: str) -> None:
    LifeboatCli(policy, env=env).run(*args)


def keys_for(bucket: str) -> set[str]:
    return {key for target, key in SigningRecorder.seen if target == bucket}


def test_repository_and_source_sign_with_their_own_profiles(tmp_path, recorder, make_bucket) -> None:  # type: ignore[no-untyped-def]
    policy, source, repo = setup(tmp_path, recorder, make_bucket, profile="repo-writer")
    env = aws_files(tmp_path)
    lifeboat(policy, env, "init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    lifeboat(policy, env, "backup", "media")
    # every command that reads or writes the bucket, not only the plain backup
    lifeboat(policy, env, "backup", "media", "--shards", "2")
    lifeboat(policy, env, "objects", "inspect", "media")
    key = str(tmp_path / "recovery.key")
    lifeboat(policy, env, "restore", "media", "--target", f"s3://{source}/restored", "--recovery-key", key)
    assert keys_for(source) == {MEDIA_KEY}
    assert keys_for(repo) == {REPO_KEY}
    assert DEFAULT_KEY not in {key for _, key in SigningRecorder.seen}


def test_repository_assumes_its_role(tmp_path, recorder, make_bucket) -> None:  # type: ignore[no-untyped-def]
    policy, source, repo = setup(tmp_path, recorder, make_bucket, profile="repo-writer", role_arn=ROLE)
    env = aws_files(tmp_path) | {"AWS_ENDPOINT_URL_STS": recorder}
    lifeboat(policy, env, "init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    lifeboat(policy, env, "backup", "media")
    # the profile's key only asks STS for the role; the role's temporary key does the work
    assert keys_for("sts:AssumeRole") == {REPO_KEY}
    assumed = keys_for(repo)  # one session per process: init, then backup
    assert len(assumed) == 2 and all(key.startswith("ASIA") for key in assumed), assumed
    assert keys_for(source) == {MEDIA_KEY}


def test_unknown_profile_is_one_line(tmp_path, make_bucket, recorder) -> None:  # type: ignore[no-untyped-def]
    policy, _, _ = setup(tmp_path, recorder, make_bucket, profile="nope")
    runner = LifeboatCli(policy, env=aws_files(tmp_path), cwd=tmp_path, timeout=60)
    proc = runner.run("init", "--recovery-key-out", "r.key", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lifeboat: error: repository: AWS profile 'nope' is not in the AWS")
