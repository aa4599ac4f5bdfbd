"""Transparent mode end to end, run inside a network namespace of its own.

``python -m tests.transparent_netns WORK_DIR`` must run as root in a fresh
network namespace (``unshare --net``; tests/test_gateway_transparent.py does
that): it brings up loopback, starts moto behind a TLS terminator as the S3
host ``localhost:<port>``, the gateway with ``--mode transparent`` under a
group id of its own, and an nftables rule that redirects every other
process's connections to that port to the gateway (mitmproxy's documented
recipe, with the group instead of a user). boto3 then talks to the S3 host
as if there were no gateway, trusting the gateway's CA. Exits non-zero with
the logs if anything fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import (
    GATEWAY_SCRIPT,
    GATEWAY_USER,
    REPO_ROOT,
    ManagedProcess,
    child_env,
    deep_merge,
    default_gateway_config,
    find_executable,
    free_port,
    make_bucket,
    s3_client,
    start_moto,
    wait_until,
)
from tests.pki import start_tls_terminator

GATEWAY_GID = 46127  # any group no other process here runs as


def main(work_dir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    processes: list[ManagedProcess] = []
    try:
        moto = start_moto(work_dir / "moto")
        processes.append(moto.process)
        tls_backend, pki = start_tls_terminator(moto, work_dir / "pki")
        processes.append(tls_backend.process)
        s3_port = int(tls_backend.endpoint_url.rsplit(":", 1)[1])

        config = deep_merge(
            default_gateway_config(moto),
            {"backend": {"ca_bundle": str(pki.ca)}, "forward": {"allowed_hosts": ["localhost"]}},
        )
        (work_dir / "gateway.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        confdir = work_dir / "mitmproxy"
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        gateway = ManagedProcess(
            "transparent-gateway",
            [
                # The gateway's own connections are told apart by its group.
                *("setpriv", f"--regid={GATEWAY_GID}", "--clear-groups"),
                find_executable("mitmdump"),
                *("-s", str(GATEWAY_SCRIPT), "--mode", "transparent"),
                *("--listen-host", "127.0.0.1", "-p", str(port)),
                *("--set", f"confdir={confdir}"),
                *("--set", f"gw_config={work_dir / 'gateway.yaml'}"),
            ],
            work_dir / "gateway.log",
            env=child_env(PYTHONPATH=python_path),
            cwd=REPO_ROOT,
        )
        processes.append(gateway)
        # Not probed by connecting: a connection that was not redirected has no
        # original destination, and mitmproxy exits on errors during startup.
        wait_until(
            lambda: gateway.check_alive() or "listening at" in gateway.output(),
            30,
            what="gateway",
        )
        rules = f"""
            table ip s3gw_test {{
                chain output {{
                    type nat hook output priority -100;
                    meta skgid != {GATEWAY_GID} tcp dport {s3_port} redirect to :{port}
                }}
            }}
        """
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)

        bucket = make_bucket(moto, prefix="transparent")
        app = s3_client(
            f"https://localhost:{s3_port}",  # the app's own endpoint, unchanged
            GATEWAY_USER,
            region=moto.region,
            verify=str(confdir / "mitmproxy-ca-cert.pem"),
        )
        body = b"redirected, not configured " * 5000
        app.put_object(Bucket=bucket, Key="k", Body=body)
        answer = app.get_object(Bucket=bucket, Key="k")
        assert answer["Body"].read() == body
        assert answer["ResponseMetadata"]["HTTPHeaders"]["x-s3gw-encryption"] == "s3g1"
        assert [o["Size"] for o in app.list_objects_v2(Bucket=bucket)["Contents"]] == [len(body)]
        stored = moto.client().get_object(Bucket=bucket, Key="k")
        assert "s3gw" in stored["Metadata"]
        assert body[:64] not in stored["Body"].read()
        print("transparent mode: OK", flush=True)
    except BaseException:
        for process in processes:
            print(process.describe(), file=sys.stderr)
        raise
    finally:
        for process in reversed(processes):
            process.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
