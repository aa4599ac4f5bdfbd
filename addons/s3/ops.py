"""Classify an S3 request into the operation the gateway has to handle.

Path-style addressing (``/bucket/key``) and virtual-hosted style
(``bucket.<base domain>``) are both recognised. The operation decides what the
gateway does: encrypt (PutObject, UploadPart), decrypt (GetObject), translate
(listings, multipart upload ids), pass through (bucket configuration,
tagging...) or refuse (operations that would store or reveal data the gateway
cannot encrypt yet).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote


class Action(enum.Enum):
    ENCRYPT_UPLOAD = "encrypt"  # request body must be encrypted
    ENCRYPT_PART = "encrypt-part"  # UploadPart: body encrypted with the upload's data key
    MULTIPART = "multipart"  # multipart bookkeeping: upload ids swapped for gateway tokens
    DECRYPT_DOWNLOAD = "decrypt"  # response body must be decrypted
    HEAD_OBJECT = "head"  # response headers translated, no body
    COPY = "copy"  # server-side copy of an encrypted object
    PASS = "pass"  # metadata-only operation, forwarded as is
    LIST = "list"  # listing whose sizes need translation
    ATTRIBUTES = "attributes"  # GetObjectAttributes: sizes and checksums need translation
    REFUSE = "refuse"  # fail closed: not supported through the gateway

    @property
    def encrypts_body(self) -> bool:
        """The request body is object data, encrypted on its way (aws-chunked allowed)."""
        return self in (Action.ENCRYPT_UPLOAD, Action.ENCRYPT_PART)


@dataclass(frozen=True)
class S3Operation:
    name: str
    action: Action
    bucket: str
    key: str
    query: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    @property
    def resource(self) -> str:
        """The ``<Resource>`` of an error response."""
        if not self.bucket:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"


# Subresources on objects whose bodies are small XML documents, never object data.
_OBJECT_CONFIG = {"acl", "tagging", "retention", "legal-hold", "attributes", "restore", "torrent"}
# Body-carrying operations that are not supported are refused instead of being
# forwarded unencrypted.
_UNSUPPORTED_OBJECT_POST = {"select", "select-type"}
_MULTIPART_BY_METHOD = {
    "POST": "CompleteMultipartUpload",
    "GET": "ListParts",
    "DELETE": "AbortMultipartUpload",
}
# Why an operation is refused, where the operation name alone does not say.
_REFUSALS = {
    "UploadPartCopy": (
        "UploadPartCopy is not supported through the encryption gateway: the copied bytes"
        " would have to be decrypted and re-encrypted as a part of the new upload."
        " Upload the part's data with UploadPart instead."
    ),
}


def refusal_message(operation: S3Operation) -> str:
    """The ``NotImplemented`` message for an operation classified ``REFUSE``."""
    return _REFUSALS.get(
        operation.name,
        f"{operation.name} is not supported through the encryption gateway.",
    )


def split_path(path: str, host: str, base_domain: str | None) -> tuple[str, str]:
    """``(bucket, key)`` of a request, keys URL-decoded."""
    raw_path = path.split("?", 1)[0]
    host = host.split(":", 1)[0].lower()
    if base_domain and host.endswith("." + base_domain.lower()):
        bucket = host[: -len(base_domain) - 1]
        return bucket, unquote(raw_path[1:])
    parts = raw_path[1:].split("/", 1)
    bucket = unquote(parts[0])
    key = unquote(parts[1]) if len(parts) > 1 else ""
    return bucket, key


def classify(
    method: str, path: str, headers: Mapping[str, str], host: str, base_domain: str | None = None
) -> S3Operation:
    """Name the S3 operation of a request and what the gateway must do with it."""
    bucket, key = split_path(path, host, base_domain)
    query = tuple(parse_qsl(path.split("?", 1)[1], keep_blank_values=True)) if "?" in path else ()
    params = {k for k, _ in query}
    method = method.upper()

    def op(name: str, action: Action) -> S3Operation:
        return S3Operation(name, action, bucket, key, query)

    if not bucket:
        return op("ListBuckets", Action.PASS) if method == "GET" else op("Unknown", Action.REFUSE)
    if not key:
        if method == "GET" and not params - {
            "list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token",
            "start-after", "fetch-owner", "encoding-type",
        }:  # fmt: skip
            return op("ListObjectsV2" if "list-type" in params else "ListObjects", Action.LIST)
        if method == "GET" and "versions" in params:
            return op("ListObjectVersions", Action.LIST)
        if method == "GET" and "uploads" in params:
            return op("ListMultipartUploads", Action.LIST)
        if method == "POST" and "delete" in params:
            return op("DeleteObjects", Action.PASS)
        if method == "POST":
            # Browser form uploads (POST Object) carry object data in a form body.
            return op("PostObject", Action.REFUSE)
        return op("Bucket" + method.title(), Action.PASS)
    if "renameObject" in params:
        # Directory buckets only; it would otherwise look like a PutObject.
        return op("RenameObject", Action.REFUSE)
    if "attributes" in params and method == "GET":
        return op("GetObjectAttributes", Action.ATTRIBUTES)
    if params & _OBJECT_CONFIG:
        return op("ObjectSubresource", Action.PASS)
    if params & _UNSUPPORTED_OBJECT_POST:
        return op("SelectObjectContent", Action.REFUSE)
    if "uploads" in params:
        if method == "POST":
            return op("CreateMultipartUpload", Action.MULTIPART)
        return op("Unknown", Action.REFUSE)
    if "uploadId" in params:
        if method == "PUT" and "partNumber" in params:
            if "x-amz-copy-source" in headers:
                return op("UploadPartCopy", Action.REFUSE)
            return op("UploadPart", Action.ENCRYPT_PART)
        name = _MULTIPART_BY_METHOD.get(method)
        return op(name, Action.MULTIPART) if name else op("Unknown", Action.REFUSE)
    if "partNumber" in params and method == "PUT":
        return op("UploadPart", Action.REFUSE)  # a part without its upload
    if method == "PUT":
        if "x-amz-copy-source" in headers:
            return op("CopyObject", Action.COPY)
        return op("PutObject", Action.ENCRYPT_UPLOAD)
    if method == "GET":
        return op("GetObject", Action.DECRYPT_DOWNLOAD)
    if method == "HEAD":
        return op("HeadObject", Action.HEAD_OBJECT)
    if method == "DELETE":
        return op("DeleteObject", Action.PASS)
    return op("Unknown", Action.REFUSE)


def copy_source_bucket(value: str) -> str:
    """The bucket an ``x-amz-copy-source`` value (``[/]bucket/key[?versionId=v]``) names."""
    path = value.strip().partition("?")[0].lstrip("/")
    return unquote(path.split("/", 1)[0])
