"""Generate docs/S3_API_IMPLEMENTATION.md from the gateway's operation classifier.

    .venv/bin/python docs/gen_s3_matrix.py          # rewrite the document
    .venv/bin/python docs/gen_s3_matrix.py --check  # exit 1 if it is out of date

Every row is a representative request of one S3 operation, fed through
``addons.s3.ops.classify``: the status and what the gateway does come from the
classification, so the document cannot say something the code does not do.
Only the notes are written here by hand. ``tests/unit/test_s3_matrix_doc.py``
fails when the committed document differs from what this script generates.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = REPO_ROOT / "docs" / "S3_API_IMPLEMENTATION.md"
if str(REPO_ROOT) not in sys.path:  # run as a script: docs/ is on sys.path, the repo is not
    sys.path.insert(0, str(REPO_ROOT))

from addons.listing import _LISTINGS_WITH_SIZES as LISTINGS_WITH_SIZES  # noqa: E402
from addons.objectcrypto import UNENCRYPTED_COPY_SOURCE  # noqa: E402
from addons.s3.errors import S3Error  # noqa: E402
from addons.s3.ops import Action, S3Operation, classify, refusal_message  # noqa: E402

HOST = "gateway.example.com"
COPY_SOURCE = ("x-amz-copy-source", "/bucket/source")

SUPPORTED, PASSTHROUGH, REFUSED = "supported", "passthrough", "refused"

# What the gateway does with each kind of operation (the classifier's Action).
BEHAVIOUR: dict[Action, tuple[str, str]] = {
    Action.ENCRYPT_UPLOAD: (
        SUPPORTED,
        "Body encrypted into one S3G1 frame; the envelope goes into `x-amz-meta-s3gw`.",
    ),
    Action.ENCRYPT_PART: (
        SUPPORTED,
        "Part encrypted as one frame with the upload's data key, taken from the upload id.",
    ),
    Action.MULTIPART: (
        SUPPORTED,
        "The backend's upload id is exchanged for the gateway's sealed token and back.",
    ),
    Action.DECRYPT_DOWNLOAD: (
        SUPPORTED,
        "Body decrypted as it streams; a range fetches only the ciphertext chunks it needs.",
    ),
    Action.HEAD_OBJECT: (
        SUPPORTED,
        "Plaintext `Content-Length`; the envelope and ciphertext checksums are hidden.",
    ),
    Action.COPY: (
        SUPPORTED,
        "Server-side copy; with `REPLACE` the source's envelope is re-wrapped and kept.",
    ),
    Action.LIST: (
        SUPPORTED,
        "Forwarded; the object sizes it lists are shown as plaintext sizes.",
    ),
    Action.ATTRIBUTES: (
        SUPPORTED,
        "Plaintext `ObjectSize` and part sizes, from one HEAD of the same version;"
        " ciphertext checksums removed.",
    ),
    Action.PASS: (PASSTHROUGH, "Forwarded unchanged, re-signed with the backend's key."),
    Action.REFUSE: (REFUSED, ""),  # the S3 error, from refusal()
}


@dataclass(frozen=True)
class Example:
    """Representative requests of one or more S3 operations that share a target."""

    operations: tuple[tuple[str, str], ...]  # (S3 operation name, HTTP method)
    target: str  # path and query
    headers: tuple[tuple[str, str], ...] = ()
    note: str = ""

    def classified(self) -> list[S3Operation]:
        return [
            classify(method, self.target, dict(self.headers), HOST) for _, method in self.operations
        ]


def ex(
    target: str,
    *operations: tuple[str, str],
    headers: tuple[tuple[str, str], ...] = (),
    note: str = "",
) -> Example:
    return Example(tuple(operations), target, headers, note)


def bucket_config(subresource: str, names: dict[str, str], note: str = "") -> Example:
    """``GET``/``PUT``/``DELETE /bucket?<subresource>`` as the operations ``names`` maps."""
    return ex(f"/bucket?{subresource}", *names.items(), note=note)


SECTIONS: list[tuple[str, list[Example]]] = [
    (
        "Objects",
        [
            ex("/bucket/key", ("PutObject", "PUT")),
            ex("/bucket/key", ("GetObject", "GET")),
            ex(
                "/bucket/key",
                ("GetObject (range)", "GET"),
                headers=(("range", "bytes=100-199"),),
                note="`206` with the plaintext `Content-Range`; `416` with the plaintext size.",
            ),
            ex(
                "/bucket/key?partNumber=2",
                ("GetObject (part)", "GET"),
                note="Backends that ignore `partNumber` serve the whole object.",
            ),
            ex("/bucket/key", ("HeadObject", "HEAD")),
            ex("/bucket/key", ("DeleteObject", "DELETE")),
            ex("/bucket?delete", ("DeleteObjects", "POST")),
            ex(
                "/bucket/key",
                ("CopyObject", "PUT"),
                headers=(COPY_SOURCE,),
                note="Into an `encrypt` bucket: one HEAD of the source, and a source without"
                " an envelope (e.g. from a `passthrough` bucket) is refused with"
                f' `InvalidRequest` (400): "{UNENCRYPTED_COPY_SOURCE}" The copy is made'
                " conditional on the source's ETag.",
            ),
            ex(
                "/bucket/key",
                ("CopyObject (`REPLACE`)", "PUT"),
                headers=(COPY_SOURCE, ("x-amz-metadata-directive", "REPLACE")),
                note="One HEAD of the source; the copy is made conditional on its ETag."
                " Unencrypted sources into an `encrypt` bucket: `InvalidRequest`, as above.",
            ),
            ex(
                "/bucket/key?attributes",
                ("GetObjectAttributes", "GET"),
                note="The HEAD only when sizes, parts or a checksum are asked for; tied to the"
                " answer by its ETag (asked for and removed if the client did not ask), and an"
                " object replaced in between gets `InternalError`. The ETag is the backend's"
                " (ADR 0006). A client's checksums are verified over the plaintext on upload but"
                " not stored, so no `Checksum` is shown. rclone's `serve s3` does not implement"
                " the operation and sends the object instead: `BadGateway`.",
            ),
            ex(
                "/bucket/key?restore",
                ("RestoreObject", "POST"),
                note="Restores the stored ciphertext from an archive tier.",
            ),
            ex(
                "/bucket/key?torrent",
                ("GetObjectTorrent", "GET"),
                note="The torrent describes the stored ciphertext.",
            ),
            ex(
                "/bucket/key?select&select-type=2",
                ("SelectObjectContent", "POST"),
                note="The backend would query ciphertext.",
            ),
            ex(
                "/bucket",
                ("PostObject", "POST"),
                headers=(("content-type", "multipart/form-data; boundary=x"),),
                note="Browser form uploads carry object data in a form body.",
            ),
            ex(
                "/WriteGetObjectResponse",
                ("WriteGetObjectResponse", "POST"),
                note="S3 Object Lambda; it carries object data, like a form upload.",
            ),
            ex(
                "/bucket/key?renameObject",
                ("RenameObject", "PUT"),
                headers=(("x-amz-rename-source", "/bucket/old"),),
                note="Directory buckets only; refused rather than mistaken for a PutObject.",
            ),
            ex(
                "/bucket/key",
                ("OPTIONS (CORS preflight) on an object", "OPTIONS"),
                note="Preflights carry no signature: authentication answers `AccessDenied` first.",
            ),
        ],
    ),
    (
        "Object versions",
        [
            ex("/bucket/key?versionId=v1", ("GetObject (version)", "GET")),
            ex("/bucket/key?versionId=v1", ("HeadObject (version)", "HEAD")),
            ex("/bucket/key?versionId=v1", ("DeleteObject (version)", "DELETE")),
            ex(
                "/bucket/key",
                ("CopyObject (from a version)", "PUT"),
                headers=(("x-amz-copy-source", "/bucket/source?versionId=v1"),),
            ),
            ex("/bucket?versions", ("ListObjectVersions", "GET")),
            bucket_config(
                "versioning", {"GetBucketVersioning": "GET", "PutBucketVersioning": "PUT"}
            ),
        ],
    ),
    (
        "Multipart uploads",
        [
            ex(
                "/bucket/key?uploads",
                ("CreateMultipartUpload", "POST"),
                note="The data key is sealed into the upload id"
                " ([ADR 0005](adr/0005-stateless-multipart-upload-ids.md))."
                " `x-amz-checksum-type: FULL_OBJECT` is refused with `NotImplemented`.",
            ),
            ex(
                "/bucket/key?partNumber=1&uploadId=TOKEN",
                ("UploadPart", "PUT"),
                note="Upload ids the gateway did not issue: `NoSuchUpload` (404).",
            ),
            ex(
                "/bucket/key?partNumber=1&uploadId=TOKEN",
                ("UploadPartCopy", "PUT"),
                headers=(COPY_SOURCE,),
            ),
            ex(
                "/bucket/key?uploadId=TOKEN",
                ("CompleteMultipartUpload", "POST"),
                note="Parts must be numbered 1..n; all but the last at least 5 MiB and a"
                " multiple of the chunk size. Whole-object checksums: `NotImplemented`.",
            ),
            ex(
                "/bucket/key?uploadId=TOKEN",
                ("AbortMultipartUpload", "DELETE"),
                note="Also accepts the backend's own upload ids (from ListMultipartUploads).",
            ),
            ex("/bucket/key?uploadId=TOKEN", ("ListParts", "GET")),
            ex(
                "/bucket?uploads",
                ("ListMultipartUploads", "GET"),
                note="Shows the backend's upload ids, usable only to abort those uploads.",
            ),
            ex(
                "/bucket/key?partNumber=1",
                ("UploadPart without an upload id", "PUT"),
            ),
        ],
    ),
    (
        "Listings",
        [
            ex("/", ("ListBuckets", "GET")),
            ex("/bucket?prefix=a%2F&delimiter=%2F", ("ListObjects", "GET")),
            ex("/bucket?list-type=2&start-after=a", ("ListObjectsV2", "GET")),
            ex(
                "/bucket?versions&prefix=a",
                ("ListObjectVersions", "GET"),
                note="Sizes use the configured chunk size"
                " ([ADR 0004](adr/0004-listing-sizes-without-head.md)).",
            ),
        ],
    ),
    (
        "Tagging, ACLs, retention and legal hold",
        [
            ex(
                "/bucket/key?tagging",
                ("GetObjectTagging", "GET"),
                ("PutObjectTagging", "PUT"),
                ("DeleteObjectTagging", "DELETE"),
            ),
            ex("/bucket/key?acl", ("GetObjectAcl", "GET"), ("PutObjectAcl", "PUT")),
            ex(
                "/bucket/key?retention",
                ("GetObjectRetention", "GET"),
                ("PutObjectRetention", "PUT"),
            ),
            ex(
                "/bucket/key?legal-hold",
                ("GetObjectLegalHold", "GET"),
                ("PutObjectLegalHold", "PUT"),
            ),
            bucket_config(
                "object-lock",
                {"GetObjectLockConfiguration": "GET", "PutObjectLockConfiguration": "PUT"},
            ),
        ],
    ),
    (
        "Buckets",
        [
            ex("/bucket", ("CreateBucket", "PUT")),
            ex("/bucket", ("HeadBucket", "HEAD")),
            ex("/bucket", ("DeleteBucket", "DELETE")),
            ex("/bucket?location", ("GetBucketLocation", "GET")),
            bucket_config(
                "policy",
                {
                    "GetBucketPolicy": "GET",
                    "PutBucketPolicy": "PUT",
                    "DeleteBucketPolicy": "DELETE",
                },
            ),
            bucket_config("policyStatus", {"GetBucketPolicyStatus": "GET"}),
            bucket_config("acl", {"GetBucketAcl": "GET", "PutBucketAcl": "PUT"}),
            bucket_config(
                "tagging",
                {
                    "GetBucketTagging": "GET",
                    "PutBucketTagging": "PUT",
                    "DeleteBucketTagging": "DELETE",
                },
            ),
            bucket_config(
                "cors",
                {"GetBucketCors": "GET", "PutBucketCors": "PUT", "DeleteBucketCors": "DELETE"},
            ),
            bucket_config(
                "lifecycle",
                {
                    "GetBucketLifecycleConfiguration": "GET",
                    "PutBucketLifecycleConfiguration": "PUT",
                    "DeleteBucketLifecycle": "DELETE",
                },
            ),
            bucket_config(
                "encryption",
                {
                    "GetBucketEncryption": "GET",
                    "PutBucketEncryption": "PUT",
                    "DeleteBucketEncryption": "DELETE",
                },
                note="The backend's own encryption at rest, independent of the gateway's.",
            ),
            bucket_config(
                "website",
                {
                    "GetBucketWebsite": "GET",
                    "PutBucketWebsite": "PUT",
                    "DeleteBucketWebsite": "DELETE",
                },
                note="A website endpoint serves the stored ciphertext.",
            ),
            bucket_config("logging", {"GetBucketLogging": "GET", "PutBucketLogging": "PUT"}),
            bucket_config(
                "notification",
                {
                    "GetBucketNotificationConfiguration": "GET",
                    "PutBucketNotificationConfiguration": "PUT",
                },
            ),
            bucket_config(
                "replication",
                {
                    "GetBucketReplication": "GET",
                    "PutBucketReplication": "PUT",
                    "DeleteBucketReplication": "DELETE",
                },
                note="Replicas are copies of the ciphertext and its envelopes.",
            ),
            bucket_config(
                "ownershipControls",
                {
                    "GetBucketOwnershipControls": "GET",
                    "PutBucketOwnershipControls": "PUT",
                    "DeleteBucketOwnershipControls": "DELETE",
                },
            ),
            bucket_config(
                "publicAccessBlock",
                {
                    "GetPublicAccessBlock": "GET",
                    "PutPublicAccessBlock": "PUT",
                    "DeletePublicAccessBlock": "DELETE",
                },
            ),
            bucket_config(
                "accelerate",
                {
                    "GetBucketAccelerateConfiguration": "GET",
                    "PutBucketAccelerateConfiguration": "PUT",
                },
            ),
            bucket_config(
                "requestPayment",
                {"GetBucketRequestPayment": "GET", "PutBucketRequestPayment": "PUT"},
            ),
            bucket_config(
                "intelligent-tiering&id=t",
                {
                    "GetBucketIntelligentTieringConfiguration": "GET",
                    "PutBucketIntelligentTieringConfiguration": "PUT",
                    "DeleteBucketIntelligentTieringConfiguration": "DELETE",
                },
            ),
            bucket_config(
                "inventory&id=i",
                {
                    "GetBucketInventoryConfiguration": "GET",
                    "PutBucketInventoryConfiguration": "PUT",
                    "DeleteBucketInventoryConfiguration": "DELETE",
                },
                note="Inventory reports list stored (ciphertext) sizes.",
            ),
            bucket_config(
                "analytics&id=a",
                {
                    "GetBucketAnalyticsConfiguration": "GET",
                    "PutBucketAnalyticsConfiguration": "PUT",
                    "DeleteBucketAnalyticsConfiguration": "DELETE",
                },
            ),
            bucket_config(
                "metrics&id=m",
                {
                    "GetBucketMetricsConfiguration": "GET",
                    "PutBucketMetricsConfiguration": "PUT",
                    "DeleteBucketMetricsConfiguration": "DELETE",
                },
            ),
        ],
    ),
]


def refusal(operation: S3Operation) -> S3Error:
    """The error ``addons/objectcrypto.py`` answers a ``REFUSE`` operation with."""
    return S3Error("NotImplemented", refusal_message(operation))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def row(example: Example) -> str:
    classified = example.classified()
    actions = {operation.action for operation in classified}
    if len(actions) != 1:
        raise ValueError(f"{example.target}: operations classified differently; split the row")
    first = classified[0]
    status, behaviour = BEHAVIOUR[first.action]
    if first.action is Action.REFUSE:
        error = refusal(first)
        behaviour = f"`{error.code}` ({error.status}): {error.message}"
    elif first.action is Action.LIST and first.name not in LISTINGS_WITH_SIZES:
        status, behaviour = PASSTHROUGH, "Forwarded unchanged: it lists no object sizes."
    names = " / ".join(name for name, _ in example.operations)
    methods = ", ".join(dict.fromkeys(method for _, method in example.operations))
    request = f"`{methods} {example.target}`"
    if example.headers:
        request += " " + " ".join(f"`{name}: {value}`" for name, value in example.headers)
    labels = " / ".join(dict.fromkeys(f"`{operation.name}`" for operation in classified))
    what = behaviour + (f" {example.note}" if example.note else "")
    return f"| {_cell(names)} | {_cell(request)} | {labels} | **{status}** | {_cell(what)} |"


HEADER = """\
# S3 API implementation matrix

<!-- Generated by docs/gen_s3_matrix.py from addons/s3/ops.py; do not edit by hand.
     Regenerate: .venv/bin/python docs/gen_s3_matrix.py -->

What the gateway does with each S3 operation. Every row is a representative
request fed through the gateway's classifier (`addons.s3.ops.classify`); the
status and the behaviour come from that classification, so this table and the
code cannot disagree (`tests/unit/test_s3_matrix_doc.py` fails when they do).

- **supported**: the gateway handles the operation itself: it encrypts,
  decrypts or translates what the operation carries.
- **passthrough**: the request carries no object data; it is forwarded as it
  is, re-signed with the backend's credentials.
- **refused**: the operation could store or reveal data the gateway cannot
  encrypt or decrypt, so it is answered with an S3 error and never forwarded
  (fail closed).

Requests are authenticated first (AWS Signature Version 4 in headers or
presigned URLs): SigV2 and SigV4a requests are refused whatever the operation
(`InvalidRequest` and `NotImplemented`). Bucket-level requests not listed
below are passed through; object-level requests the classifier does not know
are refused. "Classified as" is the operation name the gateway logs and
reports in its metrics.

The table describes buckets whose policy is `encrypt`, the default
(`bucket_policies`, [ADR 0007](adr/0007-per-bucket-policy.md)). In a
`passthrough` bucket object bodies (PutObject, UploadPart) are verified and
stored as sent, multipart uploads keep the backend's upload ids, listing sizes
are not rewritten, and objects that carry the gateway's envelope are still
decrypted. Every request naming a `refuse` bucket, as its bucket or as a copy
source, is answered `AccessDenied` (403) after authentication; ListBuckets is
not affected. How requests flow through the gateway is in
[ARCHITECTURE.md](ARCHITECTURE.md); the reasons behind the choices are in the
[ADRs](adr/).
"""


TABLE_HEAD = "| Operation | Request | Classified as | Status | What the gateway does |"


def render() -> str:
    lines = [HEADER]
    for title, examples in SECTIONS:
        lines += [
            f"## {title}",
            "",
            TABLE_HEAD,
            "|---|---|---|---|---|",
            *(row(example) for example in examples),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    args = parser.parse_args(argv)
    generated = render()
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.exists() else ""
        if current == generated:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                str(DOCUMENT.relative_to(REPO_ROOT)),
                "generated",
            )
        )
        print(f"\n{DOCUMENT.relative_to(REPO_ROOT)} is out of date; run docs/gen_s3_matrix.py")
        return 1
    DOCUMENT.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
