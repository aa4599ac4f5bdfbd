"""Integration-test harness: local S3 backends and the real gateway as subprocesses.

Everything here is plain Python so benchmarks and ad-hoc scripts can reuse it;
``tests/conftest.py`` wraps it in pytest fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import ctypes.util
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import boto3
import botocore.session
import yaml
from botocore.config import Config

from crypto.profiles import PROFILES

REPO_ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SCRIPT = REPO_ROOT / "addons" / "gateway.py"
REGION = "us-east-1"

# Until the health addon answers /readyz itself, any HTTP answer counts as ready
# (the plain reverse proxy forwards /readyz to the backend). Flip to True then.
GATEWAY_READYZ_MUST_BE_200 = True


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


# Keys clients use to talk to the gateway (written to the gateway's config).
GATEWAY_USER = Credentials("GWTESTACCESSKEY00001", "gwTestSecret0001/aB3dE5gH7jK9mN1pQ3sT5vX")
GATEWAY_SECOND_USER = Credentials(
    "GWTESTACCESSKEY00002", "gwTestSecret0002+zY8xW6vU4tS2rQ0pO8nM6lW"
)
GATEWAY_CREDENTIALS = (GATEWAY_USER, GATEWAY_SECOND_USER)
# Well-formed but not configured anywhere: for "unknown key" tests.
UNKNOWN_USER = Credentials("GWTESTUNKNOWNKEY0099", "gwTestSecret0099/unknownUnknownUnknown00")

# Backend credentials. moto accepts anything; rclone verifies SigV4 and wants
# realistic lengths (very short access keys were refused as InvalidAccessKeyId).
MOTO_CREDENTIALS = Credentials("MOTOTESTACCESSKEY001", "motoTestSecret001/aB3dE5gH7jK9mN1pQ3sT5v")
RCLONE_CREDENTIALS = Credentials("RCLONETESTACCESSKEY1", "rcloneTestSecret01+zY8xW6vU4tS2rQ0pO8nM6")

# Data keys, fresh per test process so nothing can depend on a fixed key.
KEYRING_ACTIVE_KEY_ID = "k1"
KEYRING_KEYS: dict[str, bytes] = {"k1": os.urandom(32), "k0": os.urandom(32)}
CHUNK_SIZE = 65536

# Marker for config overrides: deep_merge() removes the key instead of setting it.
DELETE = "<harness:delete>"

PROCESS_STOP_TIMEOUT = 5.0
BACKEND_START_TIMEOUT = 30.0
GATEWAY_START_TIMEOUT = 30.0

T = TypeVar("T")


class StartupError(RuntimeError):
    """A child process exited or never became ready; the message carries its log."""


# --------------------------------------------------------------------------- utilities


def free_port() -> int:
    """An ephemeral port that was free a moment ago (the child binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    Ordinary exceptions from the probe count as "not yet"; ``StartupError``
    propagates at once so a dead process fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except StartupError:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:.1f}s{detail}")
        time.sleep(interval)


def find_executable(name: str) -> str:
    """Console scripts of this environment first (next to sys.executable), then PATH."""
    # Not resolved: in a venv sys.executable is a symlink and its bin/ is what we want.
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path is None:
        raise FileNotFoundError(
            f"{name!r} not found next to {sys.executable} or on PATH; "
            "install the test extras: pip install -e '.[test]'"
        )
    return on_path


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; non-dict values replace, ``DELETE`` removes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value == DELETE:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def http_status(url: str, timeout: float = 2.0) -> int:
    """Status of an unauthenticated GET; raises OSError if nothing answers."""
    match = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)?", url)
    if match is None:
        raise ValueError(f"only plain http://host:port URLs are supported: {url}")
    host, port, path = match.group(1), int(match.group(2)), match.group(3) or "/"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# --------------------------------------------------------------------------- /proc (Linux)


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of process ``pid`` so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
    return int(match.group(1)) * 1024


def rss_bytes(pid: int) -> int:
    """Current resident set size (VmRSS) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return int(match.group(1)) * 1024


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM of process ``pid`` to its current RSS (write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (started by its main thread)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str  # as in /proc/net/tcp: "01" ESTABLISHED, "0A" LISTEN

    @property
    def established(self) -> bool:
        return self.state == "01"

    @property
    def listening(self) -> bool:
        return self.state == "0A"


def tcp_sockets(pid: int) -> list[TcpSocket]:
    """The TCP sockets process ``pid`` has open (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    local, remote = fields[1], fields[2]
                    found.append(
                        TcpSocket(
                            int(local.rsplit(":", 1)[1], 16),
                            int(remote.rsplit(":", 1)[1], 16),
                            fields[3],
                        )
                    )
    return found


# One boto3 session for all clients: loading the S3 service model is the slow
# part of client creation. The config files are ignored so a developer's
# ~/.aws/config (endpoints, checksum settings, profiles) cannot leak into tests.
_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def s3_client(
    endpoint_url: str, credentials: Credentials, *, region: str = REGION, **kwargs: Any
) -> Any:
    """A boto3 S3 client: path-style addressing, a single attempt, short connect timeout.

    ``kwargs`` go to ``Session.client``; a ``config=`` given there is merged over
    the defaults.
    """
    global _session
    defaults = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
    )
    user_config = kwargs.pop("config", None)
    config = defaults.merge(user_config) if user_config is not None else defaults
    with _session_lock:  # creating clients from one session is not thread-safe
        if _session is None:
            core_session = botocore.session.Session()
            core_session.set_config_variable("config_file", os.devnull)
            core_session.set_config_variable("credentials_file", os.devnull)
            _session = boto3.session.Session(botocore_session=core_session)
        return _session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            config=config,
            **kwargs,
        )


# --------------------------------------------------------------------------- processes


def _load_prctl() -> Callable[[], None] | None:
    """Linux: a preexec_fn making the child get SIGTERM when the test process dies,
    so a killed pytest run leaves no servers behind. Resolved up front because the
    child may only do trivial work between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return die_with_parent


_DIE_WITH_PARENT = _load_prctl()


class ManagedProcess:
    """A child process whose combined stdout/stderr goes to a log file.

    If ``on_line`` is given, output is read through a pipe by a thread (so the
    pipe never fills) and each line is passed to it before being logged.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log_file: IO[str] = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._log_lock = threading.Lock()
        self._log(f"$ {' '.join(self.argv)}\n")
        self._reader: threading.Thread | None = None
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if on_line else self._log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                text=on_line is not None,
                errors="replace" if on_line is not None else None,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest only
                preexec_fn=_DIE_WITH_PARENT,  # the starting thread must outlive the child
            )
        except OSError:
            self._log_file.close()
            raise
        if on_line is not None:
            self._reader = threading.Thread(
                target=self._pump, args=(on_line,), name=f"log-{name}", daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _log(self, text: str) -> None:
        with self._log_lock:
            if not self._log_file.closed:
                self._log_file.write(text)
                self._log_file.flush()

    def _pump(self, on_line: Callable[[str], None]) -> None:
        stream = self.process.stdout
        assert stream is not None
        for line in stream:
            with contextlib.suppress(Exception):  # a callback bug must not stop draining
                on_line(line)
            self._log(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise StartupError if the process has exited (callers attach the log)."""
        if not self.alive():
            raise StartupError(f"{self.name} exited with code {self.process.returncode}")

    def log_mark(self) -> int:
        """Current log size; pass to output(since=...) to see only later lines."""
        return self.log_path.stat().st_size

    def output(self, since: int = 0) -> str:
        """The captured stdout+stderr so far."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", errors="replace")

    def describe(self, since: int = 0, max_lines: int = 300) -> str:
        lines = self.output(since).splitlines()
        skipped = len(lines) - max_lines
        shown = lines[-max_lines:] if skipped > 0 else lines
        header = f"--- {self.name} (pid {self.pid}) log: {self.log_path}"
        if skipped > 0:
            header += f" [first {skipped} lines omitted]"
        return "\n".join([header, *shown])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time. Idempotent."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(PROCESS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(PROCESS_STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(PROCESS_STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        with self._log_lock:
            self._log_file.close()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for children: no AWS settings inherited from the developer's shell,
    and not the cloud accounts of the e2e suite (``S3GW_E2E_*``) either."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and not k.startswith(E2E_ENV_PREFIX)
    }
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["PYTHONUNBUFFERED"] = "1"  # mitmproxy's termlog does not flush
    env.update(extra)
    return env


# --------------------------------------------------------------------------- backends


@dataclass(repr=False)
class Backend:
    name: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    process: ManagedProcess | None  # None: an external server (a cloud account)
    region: str = REGION
    data_dir: Path | None = None  # rclone: buckets are top-level dirs in here
    provider: str = "generic"  # the gateway's `provider` profile for this backend
    addressing: str = "path"  # how direct clients address buckets: "path" or "virtual"
    # External backends: the existing bucket tests work in (under a unique prefix
    # each); they must not create buckets. None: tests create their own buckets.
    shared_bucket: str | None = None

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key)

    def __repr__(self) -> str:
        where = "external" if self.process is None else f"pid {self.process.pid}"
        return f"<Backend {self.name} at {self.endpoint_url}, {where}>"

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client talking to the backend directly (no gateway)."""
        if self.addressing != "path":
            addressing = Config(s3={"addressing_style": self.addressing})
            user_config = kwargs.pop("config", None)
            kwargs["config"] = addressing.merge(user_config) if user_config else addressing
        return s3_client(self.endpoint_url, self.credentials, region=self.region, **kwargs)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _start_backend(
    name: str,
    build_argv: Callable[[int], list[str]],
    credentials: Credentials,
    log_dir: Path,
    data_dir: Path | None = None,
    attempts: int = 3,
) -> Backend:
    """Start a backend on a free port; retry with another port if it exits during
    startup (another process may have taken the port since free_port())."""
    log_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        port = free_port()
        process = ManagedProcess(
            name,
            build_argv(port),
            log_dir / f"{name}-{attempt}.log",
            env=child_env(),
        )
        endpoint_url = f"http://127.0.0.1:{port}"

        def answers_http(process: ManagedProcess = process, url: str = endpoint_url) -> bool:
            process.check_alive()
            http_status(url + "/")  # any HTTP status: the server is up
            return True

        try:
            wait_until(answers_http, BACKEND_START_TIMEOUT, what=f"{name} answering HTTP")
        except TimeoutError as exc:  # hung, not a port clash: retrying won't help
            process.stop()
            raise StartupError(f"{exc}\n{process.describe()}") from exc
        except StartupError as exc:
            process.stop()
            last_error = StartupError(f"{exc}\n{process.describe()}")
            continue
        return Backend(
            name=name,
            endpoint_url=endpoint_url,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            process=process,
            data_dir=data_dir,
        )
    raise StartupError(f"{name} did not start after {attempts} attempts: {last_error}")


def start_moto(log_dir: Path) -> Backend:
    """moto's S3 server. Accepts any credentials: S3 semantics only, not auth."""
    moto_server = find_executable("moto_server")
    return _start_backend(
        "moto",
        lambda port: [moto_server, "-H", "127.0.0.1", "-p", str(port)],
        MOTO_CREDENTIALS,
        log_dir,
    )


def start_rclone(
    log_dir: Path,
    data_dir: Path,
    *,
    crypt_password: str | None = None,
    extra_args: Sequence[str] = (),
) -> Backend:
    """rclone's S3 server over a local directory; verifies SigV4.

    With ``crypt_password`` it serves a ``crypt`` remote wrapping the directory
    instead: rclone's own encrypting S3 front (names and contents encrypted).
    ``extra_args`` are added to ``rclone serve s3`` (e.g. ``--etag-hash=``).
    """
    rclone = find_executable("rclone")
    data_dir.mkdir(parents=True, exist_ok=True)
    # An absent config file: never read a developer's rclone.conf.
    rclone_config = log_dir / "rclone.conf"
    auth_key = f"{RCLONE_CREDENTIALS.access_key_id},{RCLONE_CREDENTIALS.secret_access_key}"
    served = str(data_dir)
    if crypt_password is not None:
        obscured = subprocess.run(
            [rclone, "--config", str(rclone_config), "obscure", crypt_password],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        served = f":crypt,remote='{data_dir}',password={obscured}:"
    return _start_backend(
        "rclone-crypt" if crypt_password is not None else "rclone",
        lambda port: [
            rclone,
            "serve",
            "s3",
            "--config",
            str(rclone_config),
            "--auth-key",
            auth_key,
            "--addr",
            f"127.0.0.1:{port}",
            "--log-level",
            "INFO",  # logs auth refusals ("Access Denied"), not every request
            *extra_args,
            served,
        ],
        RCLONE_CREDENTIALS,
        log_dir,
        data_dir=data_dir,
    )


def make_bucket(backend: Backend, prefix: str = "test") -> str:
    """Create a fresh, uniquely named bucket directly on the backend."""
    if backend.shared_bucket is not None:
        raise RuntimeError(f"{backend.name} is external: tests must not create buckets there")
    name = f"{prefix}-{uuid.uuid4().hex[:16]}"
    backend.client().create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------- external backends
#
# S3 servers the harness does not start (cloud accounts), described by environment
# variables; see README.md, "Tests against a cloud account". Tests on them never
# create buckets: they work under a unique prefix of one existing bucket, and
# delete what they wrote there.

E2E_ENV_PREFIX = "S3GW_E2E_"
E2E_EXTERNAL_ENV = "S3GW_E2E_EXTERNAL"  # comma list of further names, e.g. "minio-lab"
# Listed by the suite always, so a run without their variables shows them skipped.
KNOWN_EXTERNAL_BACKENDS = ("aws", "wasabi", "hetzner")
ADDRESSING_STYLES = ("path", "virtual")
E2E_PREFIX_ROOT = "s3gw-e2e/"  # every key a test writes to a shared bucket starts so
_EXTERNAL_NAME = re.compile(r"[a-z][a-z0-9-]*")
_ENDPOINT = re.compile(r"https?://[^/\s]+")


class ExternalBackendNotConfigured(Exception):
    """Some variables an external backend needs are not set."""

    def __init__(self, name: str, missing: Sequence[str]) -> None:
        self.name = name
        self.missing = list(missing)
        super().__init__(f"{name} not configured: set {', '.join(missing)}")


def external_env_name(name: str, setting: str) -> str:
    """``S3GW_E2E_<NAME>_<SETTING>``: ``minio-lab`` gives ``S3GW_E2E_MINIO_LAB_BUCKET``."""
    return f"{E2E_ENV_PREFIX}{name.upper().replace('-', '_')}_{setting}"


def requested_external_backends(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The names listed in ``S3GW_E2E_EXTERNAL`` (lower-cased, without duplicates)."""
    names = [n.strip().lower() for n in environ.get(E2E_EXTERNAL_ENV, "").split(",")]
    for name in filter(None, names):
        if not _EXTERNAL_NAME.fullmatch(name):
            raise ValueError(
                f"{E2E_EXTERNAL_ENV}: {name!r} is not a backend name (letters, digits, '-')"
            )
    return tuple(dict.fromkeys(filter(None, names)))


def external_backend_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The known cloud providers, then the further names ``S3GW_E2E_EXTERNAL`` lists."""
    return tuple(dict.fromkeys([*KNOWN_EXTERNAL_BACKENDS, *requested_external_backends(environ)]))


def external_backend(name: str, environ: Mapping[str, str]) -> Backend:
    """The external backend ``name`` as its ``S3GW_E2E_<NAME>_*`` variables describe it.

    Required: ``ENDPOINT`` (not for ``aws``: ``https://s3.<region>.amazonaws.com``),
    ``REGION``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY`` and ``BUCKET`` (an existing
    bucket). Optional: ``PROVIDER`` (the gateway's profile; default the name if it is
    one, else ``generic``) and ``ADDRESSING`` (``path``, the default, or ``virtual``:
    how the tests' direct client addresses the bucket). Raises
    ``ExternalBackendNotConfigured`` naming the missing variables, ``ValueError``
    for invalid values.
    """

    def setting(key: str) -> str:
        return environ.get(external_env_name(name, key), "").strip()

    required = ["REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "BUCKET"]
    if name != "aws":
        required.insert(0, "ENDPOINT")
    missing = [external_env_name(name, key) for key in required if not setting(key)]
    if missing:
        raise ExternalBackendNotConfigured(name, missing)
    region = setting("REGION")
    endpoint = (setting("ENDPOINT") or f"https://s3.{region}.amazonaws.com").rstrip("/")
    if not _ENDPOINT.fullmatch(endpoint):
        raise ValueError(
            f"{external_env_name(name, 'ENDPOINT')}: {endpoint!r} is not http(s)://host[:port]"
        )
    provider = (setting("PROVIDER") or (name if name in PROFILES else "generic")).lower()
    if provider not in PROFILES:
        raise ValueError(
            f"{external_env_name(name, 'PROVIDER')}: {provider!r} is not one of {sorted(PROFILES)}"
        )
    addressing = (setting("ADDRESSING") or "path").lower()
    if addressing not in ADDRESSING_STYLES:
        raise ValueError(
            f"{external_env_name(name, 'ADDRESSING')}: {addressing!r} is not one of "
            f"{list(ADDRESSING_STYLES)}"
        )
    return Backend(
        name=name,
        endpoint_url=endpoint,
        access_key_id=setting("ACCESS_KEY_ID"),
        secret_access_key=setting("SECRET_ACCESS_KEY"),
        process=None,
        region=region,
        provider=provider,
        addressing=addressing,
        shared_bucket=setting("BUCKET"),
    )


@dataclass(frozen=True)
class BucketArea:
    """Where one test keeps its objects: a fresh bucket of its own on a local backend
    (``prefix`` empty), a unique prefix of the shared bucket on an external one.

    Test bodies name keys with ``key()`` and list with ``Prefix=area.prefix``, so the
    same body works on both.
    """

    backend: Backend
    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        return self.prefix + name

    def name_of(self, key: str) -> str:
        """A listed key without the area's prefix."""
        if not key.startswith(self.prefix):
            raise AssertionError(f"{key!r} is outside the test's prefix {self.prefix!r}")
        return key[len(self.prefix) :]


def new_bucket_area(backend: Backend) -> BucketArea:
    """A fresh bucket on a local backend; a new prefix of the shared bucket otherwise."""
    if backend.shared_bucket is None:
        return BucketArea(backend, make_bucket(backend))
    # The time in the prefix dates what a killed run may have left behind.
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    prefix = f"{E2E_PREFIX_ROOT}{stamp}-{uuid.uuid4().hex[:12]}/"
    return BucketArea(backend, backend.shared_bucket, prefix)


def delete_bucket_area(area: BucketArea) -> list[str]:
    """Delete what was written under the prefix of an area of a shared bucket: its
    unfinished multipart uploads and its objects (the keys deleted are returned).
    An area that is a bucket of its own is left as it is."""
    if not area.prefix:
        return []
    if not area.prefix.startswith(E2E_PREFIX_ROOT) or not area.prefix.endswith("/"):
        raise ValueError(f"refusing to delete under {area.prefix!r}: not a test prefix")
    client = area.backend.client()
    uploads = client.get_paginator("list_multipart_uploads")
    for page in uploads.paginate(Bucket=area.bucket, Prefix=area.prefix):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=area.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=area.bucket, Prefix=area.prefix
        )
        for item in page.get("Contents", [])
    ]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        answer = client.delete_objects(Bucket=area.bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            raise RuntimeError(f"could not delete from {area.bucket}: {answer['Errors'][:3]}")
    return keys


# --------------------------------------------------------------------------- gateway


def default_gateway_config(backend: Backend) -> dict[str, Any]:
    """The gateway YAML config (as a dict) for a gateway in front of ``backend``."""
    return {
        "backend": {
            "url": backend.endpoint_url,
            "region": backend.region,
            "access_key_id": backend.access_key_id,
            "secret_access_key": backend.secret_access_key,
        },
        "credentials": [
            {"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key}
            for c in GATEWAY_CREDENTIALS
        ],
        "keyring": {
            "active": KEYRING_ACTIVE_KEY_ID,
            "keys": {
                key_id: {"base64": base64.b64encode(key).decode("ascii")}
                for key_id, key in KEYRING_KEYS.items()
            },
        },
        "encryption": {"chunk_size": CHUNK_SIZE, "algorithm": "AES-256-GCM"},
        "provider": backend.provider,
    }


_LISTENING_LINE = re.compile(r"listening at (?:\[[^\]]+\]|[^\s:]+):(\d+)")


@dataclass(repr=False)
class Gateway:
    """A running ``mitmdump -s addons/gateway.py`` process in reverse-proxy mode."""

    backend: Backend
    config: dict[str, Any]
    config_path: Path
    process: ManagedProcess
    port: int
    extra_args: tuple[str, ...] = field(default=())
    confdir: Path | None = None  # mitmproxy's confdir: its CA signs the TLS listener's certs

    def __repr__(self) -> str:
        return f"<Gateway at {self.url}, pid {self.pid}, in front of {self.backend.name}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return self.url

    @property
    def https_url(self) -> str:
        """The same listener spoken to over TLS (mitmproxy detects the ClientHello)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate a TLS client must trust to verify the gateway."""
        if self.confdir is None:
            raise RuntimeError("this gateway was started without a known confdir")
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def access_key_id(self) -> str:
        return GATEWAY_USER.access_key_id

    @property
    def secret_access_key(self) -> str:
        return GATEWAY_USER.secret_access_key

    def client(self, credentials: Credentials = GATEWAY_USER, **kwargs: Any) -> Any:
        """A boto3 S3 client talking to the gateway with a gateway client key."""
        return s3_client(self.url, credentials, region=self.backend.region, **kwargs)

    def https_client(self, credentials: Credentials = GATEWAY_USER, **kwargs: Any) -> Any:
        """Like ``client`` but over TLS, verifying the gateway against its mitmproxy CA.

        Over HTTPS current boto3 sends uploads as aws-chunked with a CRC32 trailer
        (STREAMING-UNSIGNED-PAYLOAD-TRAILER), as it does against AWS.
        """
        return s3_client(
            self.https_url,
            credentials,
            region=self.backend.region,
            verify=str(self.ca_cert_path),
            **kwargs,
        )

    def peak_rss_bytes(self) -> int:
        """Peak resident set size (VmHWM) of the gateway process so far."""
        return peak_rss_bytes(self.pid)

    def reset_peak_rss(self) -> None:
        """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
        reset_peak_rss(self.pid)

    def output(self, since: int = 0) -> str:
        """Everything the gateway printed (stdout and stderr)."""
        return self.process.output(since)

    def log_mark(self) -> int:
        """The current end of the log; pass as ``since`` to see only what follows."""
        return self.process.log_mark()

    def wait_for_output(self, pattern: str, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until the output after ``since`` matches the regex ``pattern``; return the match.

        The log reaches the file through a reader thread, so a line the gateway
        printed just before answering may land a moment after the client saw it.
        """

        def search() -> str | None:
            match = re.search(pattern, self.output(since))
            return match.group(0) if match else None

        found = wait_until(search, timeout, what=f"gateway output matching {pattern!r}")
        assert found is not None  # wait_until returns only truthy results
        return found

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self) -> None:
        self.process.stop()


def start_gateway(
    backend: Backend,
    work_dir: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    confdir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Gateway:
    """Write the config into ``work_dir``, start mitmdump and wait until it is ready."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = deep_merge(default_gateway_config(backend), overrides or {})
    config_path = work_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    confdir = confdir or work_dir / "mitmproxy"  # CA and config.yaml, never ~/.mitmproxy

    port_found = threading.Event()
    port_box: list[int] = []

    def watch_for_port(line: str) -> None:
        match = _LISTENING_LINE.search(line)
        if match and not port_found.is_set():
            port_box.append(int(match.group(1)))
            port_found.set()

    argv = [
        find_executable("mitmdump"),
        "-s",
        str(GATEWAY_SCRIPT),
        "--mode",
        f"reverse:{backend.endpoint_url}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "--set",
        f"confdir={confdir}",
        "--set",
        f"gw_config={config_path}",
        *extra_args,
    ]
    if not any(arg.startswith("gw_lean=") for arg in extra_args):
        # As `s3-encryption-gateway run` ships it (ADR 0009); flows are still printed.
        argv += ["--set", "gw_lean=true"]
    # The script dir is put on sys.path, the repo root is not: make `addons`/`crypto`
    # importable even without an editable install.
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    process = ManagedProcess(
        "gateway",
        argv,
        work_dir / "gateway.log",
        env=child_env(PYTHONPATH=python_path, **(env or {})),
        cwd=REPO_ROOT,
        on_line=watch_for_port,
    )
    try:

        def port_known() -> bool:
            process.check_alive()
            return port_found.wait(0.05)

        wait_until(port_known, GATEWAY_START_TIMEOUT, interval=0, what="gateway listening")
        gateway = Gateway(
            backend, config, config_path, process, port_box[0], tuple(extra_args), confdir
        )

        def ready() -> bool:
            process.check_alive()
            status = http_status(gateway.url + "/readyz")
            return status == 200 or not GATEWAY_READYZ_MUST_BE_200

        wait_until(ready, GATEWAY_START_TIMEOUT, what="gateway /readyz")
    except (StartupError, TimeoutError) as exc:
        process.stop()
        raise StartupError(f"gateway failed to start: {exc}\n{process.describe()}") from exc
    return gateway


class GatewayFactory:
    """Starts gateways on demand and reuses one per (backend, overrides, extra_args)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        on_start: Callable[[ManagedProcess], None] = lambda process: None,
        on_use: Callable[[ManagedProcess], None] = lambda process: None,
    ) -> None:
        self._work_dir = work_dir
        self._confdir = work_dir / "mitmproxy"  # shared, so the CA is generated once
        self._on_start = on_start
        self._on_use = on_use
        self._cache: dict[str, Gateway] = {}
        self._started: list[Gateway] = []

    def __call__(
        self,
        backend: Backend,
        overrides: Mapping[str, Any] | None = None,
        *,
        extra_args: Sequence[str] = (),
        fresh: bool = False,
    ) -> Gateway:
        """A running gateway; ``fresh=True`` starts an uncached one (e.g. for peak RSS)."""
        key = json.dumps(
            [backend.name, backend.endpoint_url, overrides or {}, list(extra_args)],
            sort_keys=True,
            default=repr,
        )
        gateway = None if fresh else self._cache.get(key)
        if gateway is not None and not gateway.alive():
            gateway.stop()  # crashed in an earlier test, whose report has its log
            gateway = None
        if gateway is None:
            work_dir = self._work_dir / f"{len(self._started) + 1}-{backend.name}"
            gateway = start_gateway(
                backend,
                work_dir,
                overrides=overrides,
                extra_args=extra_args,
                confdir=self._confdir,
            )
            self._started.append(gateway)
            self._on_start(gateway.process)
            if not fresh:
                self._cache[key] = gateway
        self._on_use(gateway.process)
        return gateway

    def stop_all(self) -> None:
        for gateway in self._started:
            gateway.stop()


# --------------------------------------------------------------------------- awscli


class S3Endpoint(Protocol):
    """Anything with an S3 endpoint and credentials: a Backend or a Gateway."""

    @property
    def endpoint_url(self) -> str: ...
    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...


class AwsCli:
    """Runs the ``aws`` CLI of this environment against a backend or gateway.

    It gets a private config file (path-style, one attempt) and no inherited AWS
    settings, so a developer's profile cannot change what is tested.
    """

    def __init__(self, work_dir: Path, *, s3_settings: Mapping[str, str] | None = None) -> None:
        """``s3_settings`` are added to the ``s3`` section of the config file, e.g.
        ``{"multipart_threshold": "64MB"}`` for single-PUT uploads of larger files."""
        work_dir.mkdir(parents=True, exist_ok=True)
        self.executable = find_executable("aws")
        self.config_path = work_dir / "aws-config"
        settings = {"addressing_style": "path", **(s3_settings or {})}
        s3_section = "".join(f"    {name} = {value}\n" for name, value in settings.items())
        self.config_path.write_text(
            f"[default]\nregion = {REGION}\nmax_attempts = 1\ns3 =\n{s3_section}"
        )

    def __call__(
        self,
        target: S3Endpoint,
        *args: str,
        credentials: Credentials | None = None,
        input: str | None = None,
        timeout: float = 120,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``aws --endpoint-url <target> ARGS...``; stdout/stderr captured as text.

        ``credentials`` defaults to the target's own (gateway: the first client key).
        Text mode only: move binary data through files (``aws s3 cp FILE s3://...``).
        """
        credentials = credentials or Credentials(target.access_key_id, target.secret_access_key)
        env = child_env(
            AWS_ACCESS_KEY_ID=credentials.access_key_id,
            AWS_SECRET_ACCESS_KEY=credentials.secret_access_key,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=str(self.config_path),
            AWS_PAGER="",
        )
        argv = [self.executable, "--endpoint-url", target.endpoint_url, *args]
        completed = subprocess.run(
            argv,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} exited {completed.returncode}\n"
                f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
            )
        return completed
