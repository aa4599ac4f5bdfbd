"""``s3-encryption-gateway``: run the gateway, or a self-contained demo.

s3-encryption-gateway run --config gateway.yaml [extra mitmdump options]
s3-encryption-gateway demo          # local S3 server + gateway, nothing to configure
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

import addons
from addons.settings import CONFIG_ENV, SettingsError, load_settings

GATEWAY_SCRIPT = Path(addons.__file__).with_name("gateway.py")
DEMO_ACCESS_KEY = "DEMOACCESSKEY0000001"
DEMO_SECRET_KEY = "demo-secret-key-change-me-0000000000000"


def mitmdump_args(config_path: str, extra: list[str]) -> list[str]:
    settings = load_settings(config_path)
    return [
        "-s", str(GATEWAY_SCRIPT),
        "--mode", f"reverse:{settings.backend.url}",
        "--listen-host", settings.listen_host,
        "--listen-port", str(settings.listen_port),
        "--set", f"gw_config={config_path}",
        # A gateway serves whoever reaches its port; network policy decides who can.
        "--set", "block_global=false",
        "--set", "keep_host_header=true",
        "--set", "connection_strategy=lazy",
        "--flow-detail", "0",
        *extra,
    ]  # fmt: skip


def run(config_path: str, extra: list[str]) -> int:
    from mitmproxy.tools.main import mitmdump

    try:
        args = mitmdump_args(config_path, extra)
    except SettingsError as error:
        print(f"s3-encryption-gateway: {error}", file=sys.stderr)
        return 2
    mitmdump(args)
    return 0


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
        return run(str(config_path), ["--set", "termlog_verbosity=warn"])
    finally:
        backend.terminate()
        try:
            backend.wait(10)
        except subprocess.TimeoutExpired:
            backend.kill()


def rewrap(args: argparse.Namespace) -> int:
    from addons.rewrap import rewrap_bucket

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"s3-encryption-gateway: {error}", file=sys.stderr)
        return 2
    result = rewrap_bucket(
        settings,
        args.bucket,
        prefix=args.prefix,
        start_after=args.start_after,
        dry_run=args.dry_run,
        report=lambda line: print(line, flush=True),
    )
    return 1 if result.failed else 0


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
    demo_parser = sub.add_parser("demo", help="run the gateway in front of a local S3 server")
    demo_parser.add_argument("--port", type=int, default=8080)
    rewrap_parser = sub.add_parser(
        "rewrap", help="re-wrap stored objects' data keys under the active key (key rotation)"
    )
    rewrap_parser.add_argument("--config", default=os.environ.get(CONFIG_ENV))
    rewrap_parser.add_argument("--bucket", required=True)
    rewrap_parser.add_argument("--prefix", default="")
    rewrap_parser.add_argument("--start-after", default="", help="resume after this key")
    rewrap_parser.add_argument("--dry-run", action="store_true")
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        return demo(args.port)
    if args.command == "rewrap":
        return rewrap(args)
    if not args.config:
        parser.error("run needs --config or $" + CONFIG_ENV)
    return run(args.config, extra)


if __name__ == "__main__":
    sys.exit(main())
