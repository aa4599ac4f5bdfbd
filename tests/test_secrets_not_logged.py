"""Secrets never reach logs, traces or error answers.

A gateway runs with everything that could leak turned up: mitmproxy's
termlog at ``debug`` and ``flow_detail=4`` (every header and body of every
flow), the JSON access log with the authentication headers asked for,
tracing to the console exporter, and a passphrase key next to base64 keys.
Clients then do ordinary work and fail in many ways (wrong secret, unknown
key, tampered presigned URL, bad chunk signature, tampered stored object,
objects under a KEK another gateway lacks, multipart uploads with bad ids).
None of these may appear in the gateway's stdout/stderr, the access log, the
trace output, or any answer a client got:

- client secret access keys (and their derived SigV4 signing keys),
- the backend's secret access key,
- every KEK, raw, base64 (standard and URL-safe, with or without padding)
  and hex, the passphrase and the KEK derived from it.

Data keys are not checked (they exist only inside the gateway); the envelope
is public metadata by design.

Also: configuration errors about bad KEKs and credentials do not echo the
secret value, and data keys are zeroized when closed.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from addons.s3.sigv4 import derive_signing_key
from addons.settings import parse_config
from addons.settings_schema import SettingsError
from crypto import DataKey
from crypto.keyring import kek_from_passphrase
from tests.harness import (
    GATEWAY_CREDENTIALS,
    GATEWAY_SECOND_USER,
    GATEWAY_USER,
    KEYRING_KEYS,
    REGION,
    Backend,
    Credentials,
    Gateway,
    GatewayFactory,
    default_gateway_config,
    make_bucket,
)
from tests.rawclient import STREAMING_SIGNED, send, sign, signed_chunks

PASSPHRASE = "correct horse battery staple / s3gw test passphrase"
SALT = base64.b64encode(b"s3gw-secrets-test-salt").decode()
PASSPHRASE_KEK = kek_from_passphrase(PASSPHRASE, base64.b64decode(SALT))
WRONG_SECRET = Credentials(GATEWAY_USER.access_key_id, "wrongSecretWrongSecret/0000000000000000")
MIB = 1024 * 1024


def byte_forms(secret: bytes) -> list[bytes]:
    """A binary secret as it could appear in text: raw, base64 in both alphabets, hex."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for encoded in (base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
        forms += [encoded, encoded.rstrip(b"=")]
    return forms


def text_forms(secret: str) -> list[bytes]:
    return [secret.encode(), ("AWS4" + secret).encode()]


def all_secrets(backend: Backend) -> dict[str, list[bytes]]:
    today = datetime.now(UTC).strftime("%Y%m%d")
    secrets: dict[str, list[bytes]] = {}
    for credentials in GATEWAY_CREDENTIALS:
        name = f"client secret of {credentials.access_key_id}"
        signing_key = derive_signing_key(credentials.secret_access_key, today, REGION)
        secrets[name] = text_forms(credentials.secret_access_key) + byte_forms(signing_key)
    secrets["backend secret"] = text_forms(backend.secret_access_key)
    for key_id, kek in KEYRING_KEYS.items():
        secrets[f"KEK {key_id}"] = byte_forms(kek)
    secrets["passphrase"] = [PASSPHRASE.encode()]
    secrets["KEK derived from the passphrase"] = byte_forms(PASSPHRASE_KEK)
    return secrets


def assert_no_secret(where: str, data: bytes, secrets: dict[str, list[bytes]]) -> None:
    for name, forms in secrets.items():
        for form in forms:
            position = data.find(form)
            assert position < 0, (
                f"{name} found in {where}: ...{data[max(0, position - 200) : position + 50]!r}"
            )


def expect_error(call: Any, answers: list[bytes]) -> None:
    try:
        call()
    except ClientError as error:
        answers.append(repr(error.response).encode("utf-8", "replace"))
        answers.append(str(error).encode("utf-8", "replace"))
    except Exception as error:  # a cut transfer (tampered object): its message counts too
        answers.append(repr(error).encode("utf-8", "replace"))


def keep(response: requests.Response, answers: list[bytes]) -> None:
    answers.append(repr(dict(response.headers)).encode() + response.content)


@pytest.fixture
def loud_gateway(
    moto_backend: Backend, gateway_factory: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, Path]:
    access_log = tmp_path_factory.mktemp("secrets") / "access.log"
    overrides = {
        "keyring": {
            "active": "kp",
            "keys": {"kp": {"passphrase": PASSPHRASE, "salt": SALT}},
        },
        "observability": {
            "access_log": str(access_log),
            "access_log_format": "json",
            "access_log_headers": [
                "authorization",
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-meta-s3gw",
            ],
            "tracing_exporter": "console",
        },
    }
    verbose = ["--set", "termlog_verbosity=debug", "--set", "flow_detail=4"]
    gateway = gateway_factory(moto_backend, overrides, extra_args=verbose, fresh=True)
    return gateway, access_log


def test_secrets_are_not_in_logs_traces_or_answers(
    moto_backend: Backend, loud_gateway: tuple[Gateway, Path], gateway_factory: GatewayFactory
) -> None:
    gateway, access_log = loud_gateway
    backend = moto_backend
    bucket = make_bucket(backend)
    answers: list[bytes] = []
    client = gateway.client()

    # Ordinary work, both client keys.
    body = os.urandom(150_000)
    client.put_object(Bucket=bucket, Key="a.bin", Body=body, Metadata={"note": "x"})
    assert client.get_object(Bucket=bucket, Key="a.bin")["Body"].read() == body
    client.get_object(Bucket=bucket, Key="a.bin", Range="bytes=10-99")["Body"].read()
    client.head_object(Bucket=bucket, Key="a.bin")
    client.list_objects_v2(Bucket=bucket)
    second = gateway.client(GATEWAY_SECOND_USER)
    second.put_object(Bucket=bucket, Key="b.txt", Body=b"second user")
    second.copy_object(
        Bucket=bucket,
        Key="c.txt",
        CopySource={"Bucket": bucket, "Key": "b.txt"},
        MetadataDirective="REPLACE",
        Metadata={"m": "1"},
    )

    # Presigned URLs: good, tampered, expired-looking.
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "a.bin"}, ExpiresIn=60
    )
    keep(requests.get(url, timeout=30), answers)
    keep(requests.get(url.replace("a.bin", "b.txt"), timeout=30), answers)
    keep(requests.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=0"), timeout=30), answers)

    # Authentication failures.
    expect_error(
        lambda: gateway.client(WRONG_SECRET).get_object(Bucket=bucket, Key="a.bin"), answers
    )
    expect_error(
        lambda: gateway.client(WRONG_SECRET).put_object(Bucket=bucket, Key="w", Body=b"x"), answers
    )
    unknown = Credentials("GWTESTUNKNOWNKEY0042", "unknownSecret/unknownSecret/unknown0042")
    expect_error(lambda: gateway.client(unknown).list_objects_v2(Bucket=bucket), answers)
    keep(requests.get(f"{gateway.url}/{bucket}/a.bin", timeout=30), answers)

    # A signed aws-chunked upload whose second chunk signature is wrong.
    data = os.urandom(20_000)
    target = f"{gateway.url}/{bucket}/chunked"
    headers = sign(
        "PUT",
        target,
        GATEWAY_USER,
        payload_hash=STREAMING_SIGNED,
        headers=[
            ("Content-Encoding", "aws-chunked"),
            ("X-Amz-Decoded-Content-Length", str(len(data))),
        ],
    )
    chunks = signed_chunks(data, 8192, headers=headers, credentials=GATEWAY_USER)
    chunks[1] = chunks[1].replace(b"chunk-signature=", b"chunk-signature=0", 1)[:-1]
    try:
        answer = send(target, "PUT", headers, chunks)
        answers.append(repr(answer).encode())
    except (ConnectionError, OSError) as error:
        answers.append(repr(error).encode())

    # Multipart: a good upload, then bad and foreign upload ids.
    created = client.create_multipart_upload(Bucket=bucket, Key="mp.bin")
    upload_id = created["UploadId"]
    part1 = client.upload_part(
        Bucket=bucket, Key="mp.bin", UploadId=upload_id, PartNumber=1, Body=os.urandom(5 * MIB)
    )
    part2 = client.upload_part(
        Bucket=bucket, Key="mp.bin", UploadId=upload_id, PartNumber=2, Body=b"tail"
    )
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="mp.bin",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": part1["ETag"]},
                {"PartNumber": 2, "ETag": part2["ETag"]},
            ]
        },
    )
    client.get_object(Bucket=bucket, Key="mp.bin", Range="bytes=5242870-5242890")["Body"].read()
    expect_error(
        lambda: client.upload_part(
            Bucket=bucket, Key="mp.bin", UploadId=upload_id[:-3] + "AAA", PartNumber=1, Body=b"x"
        ),
        answers,
    )
    expect_error(
        lambda: client.upload_part(
            Bucket=bucket, Key="other", UploadId=upload_id, PartNumber=1, Body=b"x"
        ),
        answers,
    )

    # A tampered stored object: the read fails (cut transfer or error), and says nothing secret.
    stored = backend.client().get_object(Bucket=bucket, Key="a.bin")
    ciphertext = bytearray(stored["Body"].read())
    ciphertext[100] ^= 1
    backend.client().put_object(
        Bucket=bucket, Key="a.bin", Body=bytes(ciphertext), Metadata=stored["Metadata"]
    )
    expect_error(lambda: client.get_object(Bucket=bucket, Key="a.bin")["Body"].read(), answers)
    expect_error(
        lambda: client.get_object(Bucket=bucket, Key="a.bin", Range="bytes=0-9")["Body"].read(),
        answers,
    )

    # Objects under a KEK the reading gateway lacks (the default keyring has no "kp").
    other = gateway_factory(backend)
    other_mark = other.log_mark()
    expect_error(
        lambda: other.client().get_object(Bucket=bucket, Key="b.txt")["Body"].read(), answers
    )
    expect_error(lambda: other.client().head_object(Bucket=bucket, Key="mp.bin"), answers)

    client.delete_object(Bucket=bucket, Key="b.txt")
    assert gateway.alive()
    gateway.stop()  # flushes the console exporter's last spans and the access log

    secrets = all_secrets(backend)
    output = Path(gateway.process.log_path).read_bytes()
    log = access_log.read_bytes()
    # The test means something only if everything it searches was really written.
    assert b'"trace_id"' in output, "no spans in the console trace output"
    assert b"SignatureDoesNotMatch" in log and b"REDACTED" in log, log[-2000:]
    assert b"x-amz-content-sha256" in output.lower(), "flow_detail did not show headers"
    assert_no_secret(
        "the gateway's stdout/stderr (termlog, flow dumps, console traces)", output, secrets
    )
    assert_no_secret("the access log", log, secrets)
    for i, answer in enumerate(answers):
        assert_no_secret(f"answer #{i}", answer, secrets)
    assert_no_secret("the other gateway's output", other.output(other_mark).encode(), secrets)


# --------------------------------------------------------------------------- configuration errors

SECRET = "VerySecretValue/abc+123XYZ0123456789abcd"
KEK_B64 = base64.b64encode(hashlib.sha256(b"kek").digest()).decode()


def _config(**changes: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "backend": {
            "url": "http://127.0.0.1:9",
            "access_key_id": "BACKENDKEY",
            "secret_access_key": SECRET,
        },
        "credentials": [{"access_key_id": "CLIENTKEY", "secret_access_key": SECRET}],
        "keyring": {"active": "k1", "keys": {"k1": {"base64": KEK_B64}}},
    }
    for path, value in changes.items():
        node = tree
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return tree


BAD_CONFIGS = {
    "base64 with a bad character": _config(keyring__keys__k1__base64=KEK_B64[:-2] + "!="),
    "base64 of 31 bytes": _config(
        keyring__keys__k1__base64=base64.b64encode(base64.b64decode(KEK_B64)[:31]).decode()
    ),
    "base64 with trailing text": _config(keyring__keys__k1__base64=KEK_B64 + "AAAA"),
    "keys as a list": _config(keyring__keys=[KEK_B64]),
    "keys as a string": _config(keyring__keys=KEK_B64),
    "one key as a string": _config(keyring__keys__k1=KEK_B64),
    "keyring as a string": _config(keyring=KEK_B64),
    "keyring as a list": _config(keyring=[KEK_B64]),
    "a KEK as the active key id": _config(keyring__active=KEK_B64),
    "a KEK as a key spec field": _config(keyring__keys__k1={"base64": KEK_B64, KEK_B64: 1}),
    "passphrase without salt": _config(keyring__keys__k1={"passphrase": SECRET}),
    "passphrase with a bad salt": _config(
        keyring__keys__k1={"passphrase": SECRET, "salt": SECRET + "!"}
    ),
    "credentials as a string": _config(credentials=f"CLIENTKEY:{SECRET}"),
    "credentials entry as a string": _config(credentials=[f"CLIENTKEY:{SECRET}"]),
    "credential secret as a list": _config(
        credentials=[{"access_key_id": "C", "secret_access_key": [SECRET]}]
    ),
    "a secret as a credential field": _config(
        credentials=[{"access_key_id": "C", "secret_access_key": "s", SECRET: 1}]
    ),
    "backend secret as a mapping": _config(backend__secret_access_key={"value": SECRET}),
    "backend as a string": _config(backend=SECRET),
}


@pytest.mark.parametrize("tree", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_settings_errors_do_not_echo_secrets(tree: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_config(tree)
    message = str(caught.value).encode()
    forms = {"secret": text_forms(SECRET), "KEK": byte_forms(base64.b64decode(KEK_B64))}
    forms["KEK"].append(KEK_B64[:-2].encode())  # a mangled KEK is a KEK all the same
    assert_no_secret("the SettingsError message", message, forms)


def test_good_config_still_loads() -> None:
    parse_config(_config())
    parse_config(default_gateway_config_like())


def default_gateway_config_like() -> dict[str, Any]:
    class _Backend:  # the harness's config builder only reads these attributes
        endpoint_url = "http://127.0.0.1:9"
        region = REGION
        access_key_id = "BACKENDKEY"
        secret_access_key = SECRET
        provider = "generic"

    return default_gateway_config(_Backend())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- zeroization


def test_data_keys_are_zeroized_when_closed() -> None:
    """``DataKey`` keeps its bytes in a bytearray it overwrites on close (the AEAD
    objects built from it hold copies inside the cryptography backend, which Python
    cannot wipe; see crypto/envelope.py)."""
    material = os.urandom(32)
    with DataKey(material) as key:
        buffer = key.material
        assert bytes(buffer) == material
    assert bytes(buffer) == bytes(32)
    with pytest.raises(ValueError):
        key.material  # noqa: B018 - the property raises once the key is closed
    generated = DataKey.generate()
    buffer = generated.material
    generated.close()
    assert bytes(buffer) == bytes(32)
