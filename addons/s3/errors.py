"""S3 error responses: the exception the protocol modules raise, and its XML body.

The codes, HTTP statuses and default messages follow Amazon S3's published
error list; the messages use S3's own wording so that SDKs and tools which
match on them keep working behind the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, NamedTuple
from xml.sax.saxutils import escape

__all__ = ["BAD_GATEWAY", "ERROR_CODES", "ErrorSpec", "S3Error", "error_xml"]


class ErrorSpec(NamedTuple):
    """The HTTP status and default message of one S3 error code."""

    status: int
    message: str


# Not an S3 code: the gateway answers with it when the upstream storage
# service cannot be reached or sends something the gateway cannot use.
# SDKs treat any 5xx as retryable, which is what such failures call for.
BAD_GATEWAY: Final = "BadGateway"

ERROR_CODES: Final[Mapping[str, ErrorSpec]] = {
    # Authentication and authorization.
    "AccessDenied": ErrorSpec(403, "Access Denied"),
    "AccountProblem": ErrorSpec(
        403,
        "There is a problem with your AWS account that prevents the action from "
        "completing successfully.",
    ),
    "AuthorizationHeaderMalformed": ErrorSpec(
        400, "The authorization header you provided is invalid."
    ),
    "AuthorizationQueryParametersError": ErrorSpec(
        400, "Error parsing the query-string authentication parameters."
    ),
    "ExpiredToken": ErrorSpec(400, "The provided token has expired."),
    "InvalidAccessKeyId": ErrorSpec(
        403, "The AWS Access Key Id you provided does not exist in our records."
    ),
    "InvalidToken": ErrorSpec(400, "The provided token is malformed or otherwise invalid."),
    "MissingSecurityHeader": ErrorSpec(400, "Your request is missing a required header."),
    "RequestTimeTooSkewed": ErrorSpec(
        403, "The difference between the request time and the current time is too large."
    ),
    "SignatureDoesNotMatch": ErrorSpec(
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    # Malformed requests.
    "InvalidArgument": ErrorSpec(400, "Invalid Argument"),
    "InvalidRequest": ErrorSpec(400, "Invalid Request"),
    "InvalidBucketName": ErrorSpec(400, "The specified bucket is not valid."),
    "InvalidRange": ErrorSpec(416, "The requested range is not satisfiable"),
    "KeyTooLongError": ErrorSpec(400, "Your key is too long"),
    "MaxMessageLengthExceeded": ErrorSpec(400, "Your request was too big."),
    "MalformedXML": ErrorSpec(
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MetadataTooLarge": ErrorSpec(
        400, "Your metadata headers exceed the maximum allowed metadata size"
    ),
    "MethodNotAllowed": ErrorSpec(
        405, "The specified method is not allowed against this resource."
    ),
    "MissingContentLength": ErrorSpec(411, "You must provide the Content-Length HTTP header."),
    "InvalidEncryptionAlgorithmError": ErrorSpec(
        400, "The encryption request you specified is not valid. The valid value is AES256."
    ),
    # Request bodies.
    "BadDigest": ErrorSpec(
        400,
        "The Content-MD5 or checksum value that you specified did not match what the "
        "server received.",
    ),
    "EntityTooLarge": ErrorSpec(
        400, "Your proposed upload exceeds the maximum allowed object size."
    ),
    "EntityTooSmall": ErrorSpec(
        400, "Your proposed upload is smaller than the minimum allowed object size."
    ),
    "IncompleteBody": ErrorSpec(400, "The request body terminated unexpectedly"),
    "InvalidChunkSizeError": ErrorSpec(
        403, "Only the last chunk is allowed to have a size less than 8192 bytes"
    ),
    "InvalidDigest": ErrorSpec(400, "The Content-MD5 you specified was invalid."),
    "MalformedTrailerError": ErrorSpec(
        400,
        "The request contained trailing data that was not well-formed or did not "
        "conform to our published schema.",
    ),
    "RequestTimeout": ErrorSpec(
        400,
        "Your socket connection to the server was not read from or written to within "
        "the timeout period.",
    ),
    "XAmzContentSHA256Mismatch": ErrorSpec(
        400, "The provided 'x-amz-content-sha256' header does not match what was computed."
    ),
    # Multipart uploads.
    "InvalidPart": ErrorSpec(
        400,
        "One or more of the specified parts could not be found. The part might not "
        "have been uploaded, or the specified entity tag might not have matched the "
        "part's entity tag.",
    ),
    "InvalidPartOrder": ErrorSpec(
        400,
        "The list of parts was not in ascending order. The parts list must be "
        "specified in order by part number.",
    ),
    "NoSuchUpload": ErrorSpec(
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the "
        "upload may have been aborted or completed.",
    ),
    # Resources and their state.
    "BucketAlreadyExists": ErrorSpec(
        409,
        "The requested bucket name is not available. The bucket namespace is shared by "
        "all users of the system. Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": ErrorSpec(
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": ErrorSpec(409, "The bucket you tried to delete is not empty"),
    "InvalidObjectState": ErrorSpec(
        403, "The operation is not valid for the current state of the object."
    ),
    "NoSuchBucket": ErrorSpec(404, "The specified bucket does not exist"),
    "NoSuchKey": ErrorSpec(404, "The specified key does not exist."),
    "NoSuchVersion": ErrorSpec(404, "The specified version does not exist."),
    "OperationAborted": ErrorSpec(
        409,
        "A conflicting conditional operation is currently in progress against this "
        "resource. Try again.",
    ),
    "PreconditionFailed": ErrorSpec(
        412, "At least one of the preconditions you specified did not hold"
    ),
    # Server side.
    "InternalError": ErrorSpec(500, "We encountered an internal error. Please try again."),
    "NotImplemented": ErrorSpec(
        501, "A header you provided implies functionality that is not implemented"
    ),
    "ServiceUnavailable": ErrorSpec(503, "Service is unable to handle request."),
    "SlowDown": ErrorSpec(503, "Please reduce your request rate."),
    BAD_GATEWAY: ErrorSpec(
        502, "The gateway did not receive a valid response from the upstream storage service."
    ),
}


class S3Error(Exception):
    """An error answered to the client as an S3 ``<Error>`` document.

    ``extra`` holds the additional elements S3 puts between ``<Message>`` and
    ``<Resource>`` (``<RequestTime>``, ``<StringToSign>``, ...), in order.
    """

    code: str
    message: str
    status: int
    extra: dict[str, str]

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        spec = ERROR_CODES.get(code)
        if spec is None:
            if status is None or message is None:
                # A typo in a code would otherwise reach clients as a bogus error.
                raise ValueError(f"unknown S3 error code {code!r} needs a message and a status")
            spec = ErrorSpec(status, message)
        self.code = code
        self.message = spec.message if message is None else message
        self.status = spec.status if status is None else status
        self.extra = dict(extra) if extra else {}
        super().__init__(f"{code}: {self.message}")

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, {self.message!r}, status={self.status})"


_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES: Final = {"'": "&apos;", '"': "&quot;"}


def _text(value: str) -> str:
    return escape(_NOT_XML_CHAR.sub("\ufffd", value), _ESCAPES)


def error_xml(err: S3Error, *, resource: str, request_id: str, host_id: str = "") -> bytes:
    """Render ``err`` as the body of an S3 error response, in S3's element order."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
        f"<Code>{_text(err.code)}</Code>",
        f"<Message>{_text(err.message)}</Message>",
    ]
    for name, value in err.extra.items():
        if not _ELEMENT_NAME.fullmatch(name):
            raise ValueError(f"not an XML element name: {name!r}")
        parts.append(f"<{name}>{_text(value)}</{name}>")
    parts.append(f"<Resource>{_text(resource)}</Resource>")
    parts.append(f"<RequestId>{_text(request_id)}</RequestId>")
    parts.append(f"<HostId>{_text(host_id)}</HostId>")
    parts.append("</Error>")
    return "".join(parts).encode("utf-8")
