"""Real servers for remote tests, on 127.0.0.1 only: OpenSSH's sshd and Python's http.server.

Each runs in the foreground as a child process on a free port, with throw-away keys and logs in a
temporary directory, and is stopped when its context exits.
"""

from __future__ import annotations

import contextlib
import getpass
import os
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


def stop(process: subprocess.Popen) -> None:
    """Terminate a server we started, then kill it if it does not exit."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_on_free_port(command, log: Path, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """Start `command(port)` on a free port, its output to log; return (process, port) once it listens.

    A port is free when chosen but may be taken before the server binds it: try a few. The log is a
    file because a full stderr pipe would block the server.
    """
    for attempt in range(attempts):
        port = free_port()
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                command(port), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_for_port(port, process, log)
            return process, port
        except RuntimeError:
            stop(process)
            if attempt == attempts - 1:
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
