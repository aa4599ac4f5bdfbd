"""``s3-encryption-gateway``: run the gateway, or a self-contained demo.

s3-encryption-gateway run --config gateway.yaml [extra mitmdump options]
s3-encryption-gateway demo          # local S3 server + gateway, nothing to configure
s3-encryption-gateway rewrap|verify|encrypt-existing --config gateway.yaml --bucket B
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import addons
from addons.settings import CONFIG_ENV, Settings, SettingsError, load_settings

GATEWAY_SCRIPT = Path(addons.__file__).with_name("gateway.py")
DEMO_ACCESS_KEY = "DEMOACCESSKEY0000001"
DEMO_SECRET_KEY = "demo-secret-key-change-me-0000000000000"


# Options `run` sets unless the extra arguments set them too.
RUN_OPTIONS = {
    # A gateway serves whoever reaches its port; network policy decides who can.
    "block_global": "false",
    "keep_host_header": "true",
    "connection_strategy": "lazy",
    "gw_lean": "true",  # ADR 0009
}


def mitmdump_args(
    config_path: str, extra: list[str], settings: Settings | None = None
) -> list[str]:
    settings = settings or load_settings(config_path)
    # An option given twice is an error; for a gw_* option, which mitmproxy only
    # knows once the script has loaded, it silently keeps the script from
    # loading at all. So the caller's --set replaces ours.
    given = {value.split("=", 1)[0] for flag, value in itertools.pairwise(extra) if flag == "--set"}
    defaults = [
        arg
        for name, value in RUN_OPTIONS.items()
        if name not in given
        for arg in ("--set", f"{name}={value}")
    ]
    return [
        "-s", str(GATEWAY_SCRIPT),
        "--mode", f"reverse:{settings.backend.url}",
        "--listen-host", settings.listen_host,
        "--listen-port", str(settings.listen_port),
        "--set", f"gw_config={config_path}",
        *defaults,
        "--flow-detail", "0",
        *extra,
    ]  # fmt: skip


def run(config_path: str, extra: list[str], *, workers: int = 1, reuse_port: bool = False) -> int:
    from mitmproxy.tools.main import mitmdump

    try:
        settings = load_settings(config_path)
    except SettingsError as error:
        print(f"s3-encryption-gateway: {error}", file=sys.stderr)
        return 2
    if workers > 1:
        if settings.listen_port == 0:
            print("s3-encryption-gateway: --workers needs a fixed listen.port", file=sys.stderr)
            return 2
        return supervise(config_path, extra, workers, settings.observability.metrics_port)
    if not _optimized():
        own = ["run", "--config", config_path, "--workers", "1"]
        own += ["--reuse-port"] if reuse_port else []
        os.execve(sys.executable, [*python_command(), *own, *extra], python_env())
    if reuse_port:
        listen_with_reuse_port()
    mitmdump(mitmdump_args(config_path, extra, settings))
    return 0


def _optimized() -> bool:
    """Whether this interpreter already runs as ``run`` wants it: under ``-O``, or as
    ``PYTHONOPTIMIZE`` says (``PYTHONOPTIMIZE=0`` keeps mitmproxy's checks)."""
    return bool(sys.flags.optimize) or "PYTHONOPTIMIZE" in os.environ


def python_command() -> list[str]:
    """How to start this CLI in a gateway process: under ``-O`` (ADR 0011).

    mitmproxy type-checks every field of every request and response it builds,
    and every event between its protocol layers, in ``if __debug__`` blocks:
    about a tenth of a small request's time. Nothing the gateway relies on is
    an ``assert``.
    """
    optimize = [] if _optimized() else ["-O"]
    # -P: not the working directory's own `addons` package (a common name next to
    # mitmproxy scripts); python_env() puts this installation's first instead.
    return [sys.executable, *optimize, "-P", "-m", "addons.cli"]


def python_env() -> dict[str, str]:
    """The environment for :func:`python_command`: this installation's ``addons`` first."""
    root = str(Path(addons.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def listen_with_reuse_port() -> None:
    """Make this process's listening sockets set SO_REUSEPORT (Linux, BSD).

    mitmproxy has no option for it: its proxy servers call ``asyncio.start_server``
    with host and port only. With the flag set on every process bound to a port,
    the kernel spreads new connections over them.
    """
    import asyncio

    start_server = asyncio.start_server

    async def start_server_reusing_port(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await start_server(*args, **kwargs)

    asyncio.start_server = start_server_reusing_port


def supervise(config_path: str, extra: list[str], workers: int, metrics_port: int) -> int:
    """Run ``workers`` gateway processes sharing the listen port (SO_REUSEPORT).

    SIGTERM and SIGINT are passed on to every worker. When one worker exits, the
    others are stopped and its exit code is returned, so a process manager
    (Kubernetes, systemd) restarts the whole set. Worker ``i`` (from 0) serves
    metrics on ``metrics_port + i`` when metrics are on.
    """
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(workers):
        own = ["--set", f"gw_metrics_port={metrics_port + index}"] if metrics_port else []
        argv = [*python_command(), "run", "--config", config_path]
        argv += ["--workers", "1", "--reuse-port", *extra, *own]
        children.append(subprocess.Popen(argv, env=python_env()))
        print(f"s3-encryption-gateway: worker {index} pid {children[-1].pid}", flush=True)
    pid, status = os.wait()
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it
    print(f"s3-encryption-gateway: worker pid {pid} exited ({code}); stopping", flush=True)
    for child in children:
        if child.pid != pid and child.poll() is None:
            child.terminate()
    for child in children:
        if child.pid != pid:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def demo(port: int) -> int:
    """Start moto's S3 server on loopback and the gateway in front of it."""
    moto = shutil.which(
        "moto_server",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if moto is None:
        print(
            "the demo needs moto's server: pip install 's3-encryption-gateway[demo]'",
            file=sys.stderr,
        )
        return 2
    backend_port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="s3gw-demo-"))
    backend = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(backend_port)],
        stdout=(workdir / "backend.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{backend_port}/")
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "backend": {
                "url": f"http://127.0.0.1:{backend_port}",
                "region": "us-east-1",
                "access_key_id": "backend-key",
                "secret_access_key": "backend-secret",
            },
            "credentials": [
                {"access_key_id": DEMO_ACCESS_KEY, "secret_access_key": DEMO_SECRET_KEY}
            ],
            "keyring": {
                "active": "demo",
                "keys": {"demo": {"base64": base64.b64encode(secrets.token_bytes(32)).decode()}},
            },
        }
        config_path = workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        endpoint = f"http://127.0.0.1:{port}"
        aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or "aws"
        print(
            f"""
S3 encryption gateway demo
  gateway (encrypting):  {endpoint}
  backend (moto, raw):   http://127.0.0.1:{backend_port}
  config:                {config_path}

Try it with the AWS CLI:
  export AWS_ACCESS_KEY_ID={DEMO_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={DEMO_SECRET_KEY} \\
         AWS_DEFAULT_REGION=us-east-1
  {aws} --endpoint-url {endpoint} s3 mb s3://demo
  echo 'hello, encrypted world' | {aws} --endpoint-url {endpoint} s3 cp - s3://demo/hello.txt
  {aws} --endpoint-url {endpoint} s3 cp s3://demo/hello.txt -
        # -> the plaintext, decrypted by the gateway
  {aws} --endpoint-url http://127.0.0.1:{backend_port} s3 cp s3://demo/hello.txt - | od -c | head
        # -> what the storage holds: an S3G1 frame, ciphertext

Press Ctrl-C to stop.
""",
            flush=True,
        )
        # As a child (run starts mitmproxy under -O, replacing its process), so that
        # the backend is stopped here when the gateway exits.
        return supervise(str(config_path), ["--set", "termlog_verbosity=warn"], 1, 0)
    finally:
        backend.terminate()
        try:
            backend.wait(10)
        except subprocess.TimeoutExpired:
            backend.kill()


def _bucket_command(args: argparse.Namespace, walk: Callable[..., Any], **options: Any) -> int:
    """Run one of the bucket maintenance walks; exit 1 if any object failed."""
    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"s3-encryption-gateway: {error}", file=sys.stderr)
        return 2
    result = walk(
        settings,
        args.bucket,
        prefix=args.prefix,
        start_after=args.start_after,
        report=lambda line: print(line, flush=True),
        **options,
    )
    return 1 if result.failed else 0


def rewrap(args: argparse.Namespace) -> int:
    from addons.rewrap import rewrap_bucket

    return _bucket_command(args, rewrap_bucket, dry_run=args.dry_run)


def verify(args: argparse.Namespace) -> int:
    from addons.migrate import verify_bucket

    return _bucket_command(args, verify_bucket)


def encrypt_existing(args: argparse.Namespace) -> int:
    from addons.migrate import check_sizes
    from addons.migrate import encrypt_existing as migrate

    try:
        check_sizes(args.multipart_threshold, args.part_size)
    except ValueError as error:
        print(f"s3-encryption-gateway: {error}", file=sys.stderr)
        return 2
    return _bucket_command(
        args,
        migrate,
        pause=args.pause,
        multipart_threshold=args.multipart_threshold,
        part_size=args.part_size,
    )


def byte_size(text: str) -> int:
    """``123``, ``64MiB``, ``5GiB`` (also ``64M``, ``64mb``): a size in bytes, for options."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE | re.ASCII)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1048576, 64MiB, 5GiB)")
    power = " kmgt".index(match[2].lower() or " ")  # "": bytes, "k": KiB ...
    return int(match[1]) << (10 * power)


def _bucket_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV))
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--start-after", default="", help="resume after this key")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="s3-encryption-gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the gateway with a configuration file")
    run_parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV),
        help=f"YAML configuration (default: ${CONFIG_ENV})",
    )
    run_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("S3GW_WORKERS", "1")),
        help="gateway processes sharing the listen port, e.g. one per core (default: 1)",
    )
    run_parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="listen with SO_REUSEPORT, so that several independently started"
        " gateways can share the port",
    )
    demo_parser = sub.add_parser("demo", help="run the gateway in front of a local S3 server")
    demo_parser.add_argument("--port", type=int, default=8080)
    rewrap_parser = sub.add_parser(
        "rewrap", help="re-wrap stored objects' data keys under the active key (key rotation)"
    )
    _bucket_arguments(rewrap_parser)
    rewrap_parser.add_argument("--dry-run", action="store_true")
    verify_parser = sub.add_parser(
        "verify", help="check that every stored object decrypts with the keyring"
    )
    _bucket_arguments(verify_parser)
    migrate_parser = sub.add_parser(
        "encrypt-existing", help="encrypt, in place, objects stored before the gateway"
    )
    _bucket_arguments(migrate_parser)
    migrate_parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds to wait after each object (throttle)"
    )
    migrate_parser.add_argument(
        "--multipart-threshold",
        type=byte_size,
        default="5GiB",
        help="objects larger than this are written back as multipart uploads (default: 5GiB,"
        " the largest single PUT)",
    )
    migrate_parser.add_argument(
        "--part-size",
        type=byte_size,
        default="64MiB",
        help="plaintext bytes per part of those uploads, 5MiB..5GiB (default: 64MiB)",
    )
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        return demo(args.port)
    if args.command == "rewrap":
        return rewrap(args)
    if args.command == "verify":
        return verify(args)
    if args.command == "encrypt-existing":
        return encrypt_existing(args)
    if not args.config:
        parser.error("run needs --config or $" + CONFIG_ENV)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return run(args.config, extra, workers=args.workers, reuse_port=args.reuse_port)


if __name__ == "__main__":
    sys.exit(main())
