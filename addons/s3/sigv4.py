"""Verification of AWS Signature Version 4 on S3 requests, the way S3 checks it.

Both forms are handled: the ``Authorization`` header and the presigned query
string.  The input is what arrived on the wire, framework-independent:

* ``raw_path`` and ``raw_query`` exactly as sent (still percent-encoded);
* ``headers`` as (name, value) pairs in any case, names possibly repeated;
* every ``str`` is the wire bytes decoded as UTF-8 with ``surrogateescape``
  (mitmproxy's convention), so that encoding it back gives the bytes the
  client signed.

S3 differs from other services: the path is neither normalized nor encoded a
second time.  The canonical URI is the path as sent; if that does not match,
the path decoded and re-encoded with AWS's rules is tried too, because some
clients put characters such as ``+`` or ``!`` on the wire unencoded while
signing them encoded.  Both forms name the same object key, so accepting
either grants nothing extra.  Likewise ``+`` in the query is first read as a
space (as S3 does), then as a literal plus.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from addons.s3.errors import S3Error

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "PRESIGN_PARAMETERS",
    "AuthContext",
    "PayloadHashVerifier",
    "PayloadMode",
    "derive_signing_key",
    "payload_mode_of",
    "verify",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
SIGV4A_ALGORITHM: Final = "AWS4-ECDSA-P256-SHA256"
SERVICE: Final = "s3"
TERMINATOR: Final = "aws4_request"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()

UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED_PAYLOAD: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_PAYLOAD_TRAILER: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_PAYLOAD_TRAILER: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_SIGV4A_PAYLOADS: Final = frozenset(
    {
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)

MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES: Final = 7 * 24 * 3600

# Lowercased names of the query parameters that carry a presigned signature;
# whoever forwards a verified request drops these before signing it anew.
PRESIGN_PARAMETERS: Final = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
    }
)
_SIGNATURE_PARAMETER: Final = "x-amz-signature"
_CONTENT_SHA256: Final = "x-amz-content-sha256"

_AMZ_DATE = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z", re.ASCII)
_SCOPE_DATE = re.compile(r"\d{8}", re.ASCII)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WHITESPACE_RUN = re.compile(r"[ \t\r\n\f\v]+")
_EXPIRES = re.compile(r"-?[0-9]+", re.ASCII)
_AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"

_HEADER_MALFORMED_PREFIX: Final = "The authorization header is malformed; "
_QUERY_CREDENTIAL_PREFIX: Final = "Error parsing the X-Amz-Credential parameter; "
_NEEDS_V4 = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)
_ONE_MECHANISM = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature "
    "query string parameter or the Authorization header should be specified"
)
_THREE_COMPONENTS = (
    "the authorization header requires three components: Credential, SignedHeaders, and Signature."
)
_PRESIGN_REQUIRED = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_NO_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_BAD_PAYLOAD_HASH = (
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD, STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER "
    "or a valid sha256 value."
)
_NOT_SIGNED = "There were headers present in the request which were not signed"
_SIGV4A_UNSUPPORTED = "Signature Version 4A (AWS4-ECDSA-P256-SHA256) is not supported."


class PayloadMode(enum.Enum):
    """How the body of a request is protected, from its ``x-amz-content-sha256``."""

    SIGNED = "signed"  # the header is the SHA-256 of the whole body
    UNSIGNED = "unsigned"  # UNSIGNED-PAYLOAD: the body is not covered
    STREAMING_SIGNED = "streaming-signed"  # aws-chunked, every chunk signed
    STREAMING_SIGNED_TRAILER = "streaming-signed-trailer"  # ... and a signed trailer
    STREAMING_UNSIGNED_TRAILER = "streaming-unsigned-trailer"  # aws-chunked, unsigned

    @property
    def is_streaming(self) -> bool:
        """True where the body is ``aws-chunked`` encoded."""
        return self not in (PayloadMode.SIGNED, PayloadMode.UNSIGNED)

    @property
    def chunks_signed(self) -> bool:
        """True where every chunk carries a signature chained from the seed."""
        return self in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)

    @property
    def has_trailer(self) -> bool:
        """True where trailing headers follow the last chunk."""
        return self in (
            PayloadMode.STREAMING_SIGNED_TRAILER,
            PayloadMode.STREAMING_UNSIGNED_TRAILER,
        )


_PAYLOAD_KEYWORDS: Final = {
    UNSIGNED_PAYLOAD: PayloadMode.UNSIGNED,
    STREAMING_SIGNED_PAYLOAD: PayloadMode.STREAMING_SIGNED,
    STREAMING_SIGNED_PAYLOAD_TRAILER: PayloadMode.STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER: PayloadMode.STREAMING_UNSIGNED_TRAILER,
}


def payload_mode_of(payload_hash: str) -> PayloadMode:
    """Classify an ``x-amz-content-sha256`` value, rejecting what S3 rejects."""
    mode = _PAYLOAD_KEYWORDS.get(payload_hash)
    if mode is not None:
        return mode
    if _SHA256_HEX.fullmatch(payload_hash):
        return PayloadMode.SIGNED
    if payload_hash in _SIGV4A_PAYLOADS:
        raise S3Error("NotImplemented", _SIGV4A_UNSUPPORTED)
    raise S3Error(
        "InvalidArgument",
        _BAD_PAYLOAD_HASH,
        extra={"ArgumentName": _CONTENT_SHA256, "ArgumentValue": payload_hash},
    )


@dataclass(frozen=True)
class AuthContext:
    """What a verified request was signed with; enough to check its chunks."""

    access_key: str
    region: str
    service: str
    date_scope: str  # yyyymmdd, from the credential scope
    amz_date: str  # yyyymmddThhmmssZ, the timestamp of the string to sign
    signing_key: bytes = field(repr=False)
    seed_signature: str  # lowercase hex; the first link of the chunk signature chain
    payload_hash: str  # x-amz-content-sha256, or UNSIGNED-PAYLOAD for presigned URLs
    presigned: bool

    @property
    def scope(self) -> str:
        """The credential scope, ``date/region/service/aws4_request``."""
        return f"{self.date_scope}/{self.region}/{self.service}/{TERMINATOR}"

    @property
    def payload_mode(self) -> PayloadMode:
        """How the body is protected; ``verify`` has already validated the value."""
        return payload_mode_of(self.payload_hash)


@functools.lru_cache(maxsize=256)
def derive_signing_key(secret: str, date_scope: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service and terminator.

    Kept per (secret, day, region, service), as SigV4 intends: the chain of four
    HMACs cost a fifth of a signature check. A secret no longer configured is
    never looked up again, since the access key id no longer resolves to it.
    """
    # Scope parts come from the request: encoded back to the bytes the client sent
    # (surrogateescape), never an exception for a non-UTF-8 region.
    key = _wire_bytes("AWS4" + secret)
    for part in (date_scope, region, service, TERMINATOR):
        key = hmac.new(key, _wire_bytes(part), hashlib.sha256).digest()
    return key


class PayloadHashVerifier:
    """Checks a body against a signed ``x-amz-content-sha256``, hashing as it streams."""

    def __init__(self, expected_hex: str) -> None:
        self._expected = expected_hex.lower()
        self._hash = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def finish(self) -> None:
        """Raise ``XAmzContentSHA256Mismatch`` unless the body had the signed hash."""
        computed = self._hash.hexdigest()
        if not hmac.compare_digest(computed.encode("ascii"), _wire_bytes(self._expected)):
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                extra={
                    "ClientComputedContentSHA256": self._expected,
                    "S3ComputedContentSHA256": computed,
                },
            )


@dataclass(frozen=True)
class _Credential:
    access_key: str
    date_scope: str
    region: str
    service: str
    terminator: str


@dataclass(frozen=True)
class _Claim:
    """What the request says it was signed with, before any check."""

    presigned: bool
    credential: str
    signed_headers: str
    signature: str
    # For the presigned form only.
    amz_date: str = ""
    expires: int = 0


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    now: datetime,
    lookup_secret: Callable[[str], str | None],
    *,
    expected_region: str | None = None,
) -> AuthContext:
    """Verify the SigV4 signature of an S3 request; raise ``S3Error`` as S3 would.

    ``expected_region``, when given, is the only region accepted in the
    credential scope; otherwise any region is (the gateway serves them all).
    The checks run in S3's order: form, credential, access key, signature,
    then time, so that a wrong signature is reported as such even when the
    request is also stale.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    header_map = _header_map(headers)
    query = _split_query(raw_query)
    claim = _claim(header_map, query)

    errors = _HEADER_ERRORS if not claim.presigned else _QUERY_ERRORS
    if claim.presigned:
        payload_hash = _presigned_payload_hash(query, header_map)
        amz_date, request_time = claim.amz_date, _parse_amz_date(claim.amz_date)
        assert request_time is not None  # _claim has checked the format
    else:
        payload_hash = _header_payload_hash(header_map)
        amz_date, request_time = _header_request_time(header_map)
    payload_mode_of(payload_hash)

    credential = _parse_credential(claim.credential, errors)
    _check_scope(credential, amz_date, expected_region, errors)

    secret = lookup_secret(credential.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": credential.access_key})
    signing_key = derive_signing_key(
        secret, credential.date_scope, credential.region, credential.service
    )

    signed_names = claim.signed_headers.split(";") if claim.signed_headers else []
    scope = f"{credential.date_scope}/{credential.region}/{credential.service}/{TERMINATOR}"
    seed_signature = _match_signature(
        method=method,
        raw_path=raw_path,
        query=query,
        presigned=claim.presigned,
        header_map=header_map,
        signed_names=signed_names,
        signed_headers_line=claim.signed_headers,
        payload_hash=payload_hash,
        amz_date=amz_date,
        scope=scope,
        signing_key=signing_key,
        provided=claim.signature,
        access_key=credential.access_key,
    )
    _check_all_signed(header_map, {name.lower() for name in signed_names})
    if claim.presigned:
        _check_presign_window(request_time, claim.expires, now)
    else:
        _check_skew(header_map, request_time, now)

    return AuthContext(
        access_key=credential.access_key,
        region=credential.region,
        service=credential.service,
        date_scope=credential.date_scope,
        amz_date=amz_date,
        signing_key=signing_key,
        seed_signature=seed_signature,
        payload_hash=payload_hash,
        presigned=claim.presigned,
    )


# --- Reading the claim ------------------------------------------------------


@dataclass(frozen=True)
class _ErrorStyle:
    """Header-form and query-form problems are reported under different codes."""

    code: str
    prefix: str


_HEADER_ERRORS: Final = _ErrorStyle("AuthorizationHeaderMalformed", _HEADER_MALFORMED_PREFIX)
_QUERY_ERRORS: Final = _ErrorStyle("AuthorizationQueryParametersError", _QUERY_CREDENTIAL_PREFIX)


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    if "host" not in found and ":authority" in found:
        # HTTP/2 carries the host as a pseudo-header; clients sign it as "host".
        found["host"] = found[":authority"]
    return found


def _split_query(raw_query: str) -> list[tuple[str, str]]:
    """The query as (name, value) pairs, still percent-encoded, in wire order."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def _wire_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode_query_part(text: str, *, plus_is_space: bool = True) -> bytes:
    if plus_is_space:
        text = text.replace("+", " ")
    return unquote_to_bytes(_wire_bytes(text))


def _query_text(text: str) -> str:
    return _decode_query_part(text).decode("utf-8", "surrogateescape")


def _claim(header_map: dict[str, list[str]], query: list[tuple[str, str]]) -> _Claim:
    authorizations = [value for value in header_map.get("authorization", []) if value]
    names = {_query_text(name) for name, _ in query}
    v4_params = {name.lower(): name for name in names if name.lower() in PRESIGN_PARAMETERS}
    v2_params = names & {"AWSAccessKeyId", "Signature"}

    if authorizations:
        if v4_params or v2_params:
            raise S3Error(
                "InvalidArgument",
                _ONE_MECHANISM,
                extra={"ArgumentName": "Authorization", "ArgumentValue": authorizations[0]},
            )
        if len(authorizations) > 1:
            raise S3Error(
                "AuthorizationHeaderMalformed",
                _HEADER_MALFORMED_PREFIX + "more than one Authorization header was sent.",
            )
        return _parse_authorization(authorizations[0])
    if v4_params:
        return _parse_presign(query)
    if v2_params:
        raise S3Error("InvalidRequest", _NEEDS_V4)
    raise S3Error("AccessDenied")


def _parse_authorization(value: str) -> _Claim:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise S3Error("InvalidRequest", _NEEDS_V4)
        if algorithm == SIGV4A_ALGORITHM:
            raise S3Error("NotImplemented", _SIGV4A_UNSUPPORTED)
        raise S3Error(
            "InvalidArgument",
            "Unsupported Authorization Type",
            extra={"ArgumentName": "Authorization", "ArgumentValue": value},
        )
    components: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, component = part.strip().partition("=")
        if sep:
            components.setdefault(key, component.strip())
    try:
        return _Claim(
            presigned=False,
            credential=components["Credential"],
            signed_headers=components["SignedHeaders"],
            signature=components["Signature"],
        )
    except KeyError:
        raise S3Error(
            "AuthorizationHeaderMalformed", _HEADER_MALFORMED_PREFIX + _THREE_COMPONENTS
        ) from None


def _parse_presign(query: list[tuple[str, str]]) -> _Claim:
    params: dict[str, str] = {}
    for raw_name, raw_value in query:
        name = _query_text(raw_name).lower()
        if name in PRESIGN_PARAMETERS:
            if name in params:
                raise S3Error(
                    "AuthorizationQueryParametersError",
                    f"The query parameter {_query_text(raw_name)} appears more than once.",
                )
            params[name] = _query_text(raw_value)
    if len(params) < len(PRESIGN_PARAMETERS):
        raise S3Error("AuthorizationQueryParametersError", _PRESIGN_REQUIRED)
    if params["x-amz-algorithm"] != ALGORITHM:
        if params["x-amz-algorithm"] == SIGV4A_ALGORITHM:
            raise S3Error("NotImplemented", _SIGV4A_UNSUPPORTED)
        raise S3Error(
            "AuthorizationQueryParametersError",
            'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256 and AWS4-ECDSA-P256-SHA256"',
        )
    amz_date = params["x-amz-date"]
    if _parse_amz_date(amz_date) is None:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
    expires_text = params["x-amz-expires"]
    # int() raises ValueError beyond 4300 digits; anything that long is out of range anyway.
    if _EXPIRES.fullmatch(expires_text) and len(expires_text) > 20:
        expires_text = str(MAX_PRESIGN_EXPIRES + 1) if expires_text[0] != "-" else "-1"
    if not _EXPIRES.fullmatch(expires_text):
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires < 0:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            f"X-Amz-Expires must be less than {MAX_PRESIGN_EXPIRES} seconds",
        )
    return _Claim(
        presigned=True,
        credential=params["x-amz-credential"],
        signed_headers=params["x-amz-signedheaders"],
        signature=params[_SIGNATURE_PARAMETER],
        amz_date=amz_date,
        expires=expires,
    )


def _parse_credential(credential: str, errors: _ErrorStyle) -> _Credential:
    parts = credential.rsplit("/", 4)
    if len(parts) != 5:
        raise S3Error(
            errors.code,
            errors.prefix + "the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        )
    return _Credential(*parts)


def _check_scope(
    credential: _Credential, amz_date: str, expected_region: str | None, errors: _ErrorStyle
) -> None:
    def fail(detail: str, extra: dict[str, str] | None = None) -> S3Error:
        return S3Error(errors.code, errors.prefix + detail, extra=extra)

    if not _SCOPE_DATE.fullmatch(credential.date_scope):
        raise fail(
            f'incorrect date format "{credential.date_scope}". This date in the credential '
            'must be in the format "yyyyMMdd".'
        )
    if credential.service != SERVICE:
        raise fail(
            f'incorrect service "{credential.service}". This endpoint belongs to "{SERVICE}".'
        )
    if credential.terminator != TERMINATOR:
        raise fail(
            f'incorrect terminal "{credential.terminator}". This endpoint uses "{TERMINATOR}".'
        )
    if expected_region is not None and credential.region != expected_region:
        raise fail(
            f"the region '{credential.region}' is wrong; expecting '{expected_region}'",
            {"Region": expected_region},
        )
    if credential.date_scope != amz_date[:8]:
        raise fail(
            f'Invalid credential date "{credential.date_scope}". This date is not the same '
            f'as X-Amz-Date: "{amz_date[:8]}".'
        )


def _header_payload_hash(header_map: dict[str, list[str]]) -> str:
    values = header_map.get(_CONTENT_SHA256)
    if not values:
        raise S3Error(
            "InvalidRequest", f"Missing required header for this request: {_CONTENT_SHA256}"
        )
    return ",".join(value.strip() for value in values)


def _presigned_payload_hash(query: list[tuple[str, str]], header_map: dict[str, list[str]]) -> str:
    # A presigned URL does not cover the body unless the signer put a hash in
    # the query or in a header; either way that value is in the canonical request.
    for name, value in query:
        if _query_text(name).lower() == _CONTENT_SHA256:
            return _query_text(value)
    values = header_map.get(_CONTENT_SHA256)
    if values:
        return ",".join(value.strip() for value in values)
    return UNSIGNED_PAYLOAD


def _parse_amz_date(text: str) -> datetime | None:
    match = _AMZ_DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.groups())
    try:  # not strptime, which took a tenth of a whole signature check
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _parse_http_date(text: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000" means UTC with no zone claimed
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # a zone offset pushing year 9999 or 1 out of range
        return None


def _header_request_time(header_map: dict[str, list[str]]) -> tuple[str, datetime]:
    """The request time as the string to sign carries it, and as a datetime."""
    if "x-amz-date" in header_map:
        text = ",".join(header_map["x-amz-date"]).strip()
        parsed = _parse_amz_date(text)
        if parsed is not None:
            return text, parsed  # already in the string to sign's format
    elif "date" in header_map:
        text = ",".join(header_map["date"]).strip()
        parsed = _parse_amz_date(text) or _parse_http_date(text)
    else:
        parsed = None
    if parsed is None:
        raise S3Error("AccessDenied", _NO_DATE)
    return parsed.strftime(_AMZ_DATE_FORMAT), parsed


# --- The canonical request --------------------------------------------------


def _aws_quote(raw: bytes, safe: str) -> str:
    # quote() keeps exactly AWS's unreserved set (A-Za-z0-9-_.~) plus `safe`
    # and writes uppercase hex, as SigV4 requires.
    return quote(raw, safe=safe)


def _canonical_uris(raw_path: str) -> list[str]:
    path = raw_path or "/"
    normalized = _aws_quote(unquote_to_bytes(_wire_bytes(path)), safe="/")
    return [path] if normalized == path else [path, normalized]


def _canonical_query(query: list[tuple[str, str]], *, presigned: bool, plus_is_space: bool) -> str:
    pairs = []
    for name, value in query:
        decoded_name = _decode_query_part(name, plus_is_space=plus_is_space)
        if presigned and decoded_name.lower() == _SIGNATURE_PARAMETER.encode():
            continue
        decoded_value = _decode_query_part(value, plus_is_space=plus_is_space)
        pairs.append((_aws_quote(decoded_name, safe=""), _aws_quote(decoded_value, safe="")))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _canonical_queries(query: list[tuple[str, str]], *, presigned: bool) -> list[str]:
    as_space = _canonical_query(query, presigned=presigned, plus_is_space=True)
    if not any("+" in name or "+" in value for name, value in query):
        return [as_space]
    return [as_space, _canonical_query(query, presigned=presigned, plus_is_space=False)]


def _canonical_header_value(values: list[str]) -> str:
    return ",".join(_WHITESPACE_RUN.sub(" ", value).strip(" ") for value in values)


def _canonical_request(
    method: str,
    uri: str,
    query: str,
    headers_block: str,
    signed_headers_line: str,
    payload_hash: str,
) -> str:
    return "\n".join((method, uri, query, headers_block, signed_headers_line, payload_hash))


def _string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(_wire_bytes(canonical_request)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hex_bytes(text: str) -> str:
    return " ".join(f"{byte:02x}" for byte in _wire_bytes(text))


def _match_signature(
    *,
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    presigned: bool,
    header_map: dict[str, list[str]],
    signed_names: list[str],
    signed_headers_line: str,
    payload_hash: str,
    amz_date: str,
    scope: str,
    signing_key: bytes,
    provided: str,
    access_key: str,
) -> str:
    """Return the signature computed for the request, if it is the one provided."""
    # The headers are taken in the order the client listed them: that is the
    # order it signed, and a well-behaved client lists them sorted anyway.
    headers_block = "".join(
        f"{name.lower()}:{_canonical_header_value(header_map.get(name.lower(), []))}\n"
        for name in signed_names
    )
    provided_bytes = _wire_bytes(provided.lower())
    first: tuple[str, str] | None = None
    for uri in _canonical_uris(raw_path):
        for canonical_query in _canonical_queries(query, presigned=presigned):
            canonical_request = _canonical_request(
                method, uri, canonical_query, headers_block, signed_headers_line, payload_hash
            )
            string_to_sign = _string_to_sign(amz_date, scope, canonical_request)
            digest = hmac.new(signing_key, _wire_bytes(string_to_sign), hashlib.sha256)
            signature = digest.hexdigest()
            if hmac.compare_digest(signature.encode("ascii"), provided_bytes):
                return signature
            if first is None:
                first = (canonical_request, string_to_sign)
    assert first is not None
    canonical_request, string_to_sign = first
    raise S3Error(
        "SignatureDoesNotMatch",
        extra={
            "AWSAccessKeyId": access_key,
            "StringToSign": string_to_sign,
            "SignatureProvided": provided,
            "StringToSignBytes": _hex_bytes(string_to_sign),
            "CanonicalRequest": canonical_request,
            "CanonicalRequestBytes": _hex_bytes(canonical_request),
        },
    )


# --- After the signature ----------------------------------------------------


def _check_all_signed(header_map: dict[str, list[str]], signed: set[str]) -> None:
    # S3 refuses x-amz-* headers outside the signature, since they change what
    # the request does; x-amz-content-sha256 is the one it lets through.
    unsigned = sorted(
        name
        for name in header_map
        if name.startswith("x-amz-") and name != _CONTENT_SHA256 and name not in signed
    )
    if "host" not in signed:
        unsigned.insert(0, "host")
    if unsigned:
        raise S3Error("AccessDenied", _NOT_SIGNED, extra={"HeadersNotSigned": ", ".join(unsigned)})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_skew(header_map: dict[str, list[str]], request_time: datetime, now: datetime) -> None:
    if abs(now - request_time) > MAX_CLOCK_SKEW:
        raw = header_map.get("x-amz-date") or header_map.get("date") or [""]
        raise S3Error(
            "RequestTimeTooSkewed",
            extra={
                "RequestTime": raw[0],
                "ServerTime": _iso(now),
                "MaxAllowedSkewMilliseconds": str(int(MAX_CLOCK_SKEW.total_seconds() * 1000)),
            },
        )


def _check_presign_window(signed_at: datetime, expires: int, now: datetime) -> None:
    expires_at = signed_at + timedelta(seconds=expires)
    if signed_at - now > MAX_CLOCK_SKEW:
        raise S3Error(
            "AccessDenied",
            "Request is not yet valid",
            extra={
                # S3 reports this one in epoch milliseconds, unlike the others.
                "X-Amz-Date": str(int(signed_at.timestamp() * 1000)),
                "Expires": _iso(expires_at),
                "ServerTime": _iso(now),
            },
        )
    if expires == 0 or now > expires_at:
        raise S3Error(
            "AccessDenied",
            "Request has expired",
            extra={
                "X-Amz-Expires": str(expires),
                "Expires": _iso(expires_at),
                "ServerTime": _iso(now),
            },
        )
