"""Configuration reloads of the real gateway process (SIGHUP and file changes).

A safe change (a new client key) is applied while a large download is in
progress, which completes intact; an invalid file and a crypto change are
refused with the reason logged, and the running configuration stays.
"""

from __future__ import annotations

import copy
import hashlib
import os
import signal
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from tests.harness import (
    GATEWAY_SECOND_USER,
    Backend,
    Credentials,
    Gateway,
    GatewayFactory,
    make_bucket,
)

NEW_USER = Credentials("GWTESTRELOADKEY00003", "gwTestSecret0003/reloadReloadReload0003")
STREAM_SIZE = 64 * 1024 * 1024
PIECE = 1024 * 1024
POLL = ["--set", "gw_config_poll=0.2"]


def _rewrite(gateway: Gateway, change: Any) -> None:
    config = copy.deepcopy(gateway.config)
    change(config)
    gateway.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _works(gateway: Gateway, credentials: Credentials, bucket: str) -> bool:
    try:
        gateway.client(credentials).head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("403", "InvalidAccessKeyId"):
            return False
        raise
    return True


def test_new_credential_applies_without_dropping_a_streaming_download(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    gateway = gateway_factory(moto_backend, extra_args=POLL, fresh=True)
    bucket = make_bucket(moto_backend, prefix="reload")
    s3 = gateway.client()
    data = os.urandom(STREAM_SIZE)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    assert not _works(gateway, NEW_USER, bucket)

    body = s3.get_object(Bucket=bucket, Key="big")["Body"]
    digest = hashlib.sha256()
    received = 0
    first = body.read(PIECE)  # the download is under way, and stalls until read on
    digest.update(first)
    received += len(first)

    mark = gateway.log_mark()
    _rewrite(
        gateway,
        lambda config: config["credentials"].append(
            {
                "access_key_id": NEW_USER.access_key_id,
                "secret_access_key": NEW_USER.secret_access_key,
            }
        ),
    )
    logged = gateway.wait_for_output(r"configuration reloaded \(file changed\): [^\n]*", mark)
    assert f"credentials: added {NEW_USER.access_key_id}" in logged
    assert NEW_USER.secret_access_key not in gateway.output(mark)
    assert _works(gateway, NEW_USER, bucket)
    assert received < STREAM_SIZE // 2  # still in progress when the reload was applied

    while piece := body.read(PIECE):
        digest.update(piece)
        received += len(piece)
    assert received == STREAM_SIZE
    assert digest.digest() == hashlib.sha256(data).digest()


def test_invalid_reload_is_refused_and_the_old_configuration_stays(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    gateway = gateway_factory(moto_backend, extra_args=["--set", "gw_config_poll=0"], fresh=True)
    bucket = make_bucket(moto_backend, prefix="reload")

    def broken(config: dict[str, Any]) -> None:
        config["credentials"] = config["credentials"][:1]  # would drop the second user
        config["listen"] = {"port": "eighty"}

    mark = gateway.log_mark()
    _rewrite(gateway, broken)
    os.kill(gateway.pid, signal.SIGHUP)
    logged = gateway.wait_for_output(r"reload \(SIGHUP\) refused[^\n]*", mark)
    assert "listen.port: 'eighty' is invalid; expected an integer" in logged
    assert gateway.alive()
    assert _works(gateway, GATEWAY_SECOND_USER, bucket)
    gateway.client().put_object(Bucket=bucket, Key="after", Body=b"still working")
    assert gateway.client().get_object(Bucket=bucket, Key="after")["Body"].read() == (
        b"still working"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda config: config["encryption"].update(chunk_size=1 << 20),
            "encryption.chunk_size: 65536 -> 1048576 needs a restart",
        ),
        (
            lambda config: config["keyring"]["keys"].pop("k0"),
            "keyring.keys: removing k0 is refused",
        ),
    ],
    ids=["chunk-size", "remove-kek"],
)
def test_crypto_change_is_refused_and_logged(
    moto_backend: Backend, gateway_factory: GatewayFactory, change: Any, reason: str
) -> None:
    gateway = gateway_factory(moto_backend, extra_args=POLL, fresh=True)
    bucket = make_bucket(moto_backend, prefix="reload")
    s3 = gateway.client()
    data = os.urandom(200_000)  # several chunks at the running size
    s3.put_object(Bucket=bucket, Key="before", Body=data)

    mark = gateway.log_mark()
    _rewrite(
        gateway,
        lambda config: (
            change(config),
            config["credentials"].append(
                {
                    "access_key_id": NEW_USER.access_key_id,
                    "secret_access_key": NEW_USER.secret_access_key,
                }
            ),
        ),
    )
    logged = gateway.wait_for_output(r"reload \(file changed\) refused[^\n]*", mark)
    assert reason in logged
    assert not _works(gateway, NEW_USER, bucket)  # nothing of a refused reload applies
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == data
    s3.put_object(Bucket=bucket, Key="after", Body=data)
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == data
    assert "configuration reloaded" not in gateway.output(mark)


def test_observability_changes_apply_to_the_running_addons(
    moto_backend: Backend, gateway_factory: GatewayFactory
) -> None:
    gateway = gateway_factory(moto_backend, extra_args=POLL, fresh=True)
    bucket = make_bucket(moto_backend, prefix="reload")
    s3 = gateway.client()
    mark = gateway.log_mark()
    s3.put_object(Bucket=bucket, Key="quiet", Body=b"x")
    assert '"operation":"PutObject"' not in gateway.output(mark)

    _rewrite(
        gateway,
        lambda config: config.setdefault("observability", {}).update(
            access_log="-", access_log_format="json"
        ),
    )
    logged = gateway.wait_for_output(r"configuration reloaded \(file changed\): [^\n]*", mark)
    assert "observability.access_log: '' -> '-'" in logged
    mark = gateway.log_mark()
    s3.put_object(Bucket=bucket, Key="logged", Body=b"x")
    gateway.wait_for_output(r'"operation":"PutObject"[^\n]*"status":200', mark)
