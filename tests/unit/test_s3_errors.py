"""S3Error defaults and the XML error document."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from addons.s3.errors import BAD_GATEWAY, ERROR_CODES, S3Error, error_xml

EXPECTED_STATUSES = {
    "AccessDenied": 403,
    "SignatureDoesNotMatch": 403,
    "InvalidAccessKeyId": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "MissingSecurityHeader": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "InvalidDigest": 400,
    "BadDigest": 400,
    "XAmzContentSHA256Mismatch": 400,
    "IncompleteBody": 400,
    "InvalidRange": 416,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "EntityTooSmall": 400,
    "EntityTooLarge": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "KeyTooLongError": 400,
    "NoSuchKey": 404,
    "NoSuchBucket": 404,
    "NoSuchUpload": 404,
    "MethodNotAllowed": 405,
    "PreconditionFailed": 412,
    "NotImplemented": 501,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
    BAD_GATEWAY: 502,
}


@pytest.mark.parametrize(("code", "status"), EXPECTED_STATUSES.items())
def test_default_statuses(code: str, status: int) -> None:
    err = S3Error(code)
    assert (err.code, err.status) == (code, status)
    assert err.message == ERROR_CODES[code].message
    assert err.extra == {}


def test_aws_wording() -> None:
    assert S3Error("SignatureDoesNotMatch").message == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )
    assert S3Error("NoSuchKey").message == "The specified key does not exist."
    assert S3Error("AccessDenied").message == "Access Denied"


def test_overrides_and_unknown_codes() -> None:
    err = S3Error("AccessDenied", "Request has expired", status=400, extra={"A": "1"})
    assert (err.message, err.status, err.extra) == ("Request has expired", 400, {"A": "1"})
    assert str(err) == "AccessDenied: Request has expired"
    assert S3Error("Custom", "custom", status=418).status == 418
    with pytest.raises(ValueError, match="unknown S3 error code"):
        S3Error("NoSuchKeyy")


def test_error_xml_layout() -> None:
    err = S3Error(
        "RequestTimeTooSkewed",
        extra={"RequestTime": "20130524T000000Z", "MaxAllowedSkewMilliseconds": "900000"},
    )
    body = error_xml(err, resource="/bucket/key", request_id="RID", host_id="HID")
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>RequestTimeTooSkewed</Code>'
        b"<Message>The difference between the request time and the current time is too large."
        b"</Message><RequestTime>20130524T000000Z</RequestTime>"
        b"<MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>"
        b"<Resource>/bucket/key</Resource><RequestId>RID</RequestId><HostId>HID</HostId></Error>"
    )


def test_error_xml_escapes_everything() -> None:
    awkward = "a<b>&'\"\x00\x1b\ud800 ü\n"
    err = S3Error("SignatureDoesNotMatch", extra={"CanonicalRequest": awkward})
    body = error_xml(err, resource="/b/<k>&", request_id="r&d")
    assert b"&apos;x-amz-content-sha256&apos;" in error_xml(
        S3Error("XAmzContentSHA256Mismatch"), resource="/", request_id="r"
    )
    root = ET.fromstring(body)
    assert [child.tag for child in root] == [
        "Code",
        "Message",
        "CanonicalRequest",
        "Resource",
        "RequestId",
        "HostId",
    ]
    assert root.findtext("CanonicalRequest") == "a<b>&'\"\ufffd\ufffd\ufffd ü\n"
    assert root.findtext("Resource") == "/b/<k>&"
    assert root.findtext("RequestId") == "r&d"
    assert root.findtext("HostId") == ""


def test_error_xml_refuses_bad_element_names() -> None:
    with pytest.raises(ValueError, match="element name"):
        error_xml(S3Error("AccessDenied", extra={"a b": "x"}), resource="/", request_id="r")
