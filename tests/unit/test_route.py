"""Which forward-mode hosts are virtual-hosted style, and for which endpoint."""

from __future__ import annotations

from addons.route import virtual_host_domain

ALLOWED = ("s3.eu-west-1.amazonaws.com", "*.s3.eu-west-1.amazonaws.com", "s3.amazonaws.com")


def test_the_bucket_is_what_comes_before_an_entry_without_wildcards() -> None:
    assert virtual_host_domain("b.s3.eu-west-1.amazonaws.com", ALLOWED) == (
        "s3.eu-west-1.amazonaws.com"
    )
    assert virtual_host_domain("my.dotted.bucket.s3.amazonaws.com", ALLOWED) == "s3.amazonaws.com"
    assert virtual_host_domain("B.S3.Amazonaws.COM.", ALLOWED) == "s3.amazonaws.com"


def test_endpoints_themselves_and_wildcard_matches_are_path_style() -> None:
    assert virtual_host_domain("s3.eu-west-1.amazonaws.com", ALLOWED) is None
    assert virtual_host_domain("s3.amazonaws.com", ALLOWED) is None
    assert virtual_host_domain("b.s3.us-east-1.amazonaws.com", ("*.amazonaws.com",)) is None
    assert virtual_host_domain("localhost", ("localhost", "*.localhost")) is None


def test_the_longest_endpoint_wins() -> None:
    allowed = ("localhost", "s3.localhost", "*.localhost")
    assert virtual_host_domain("b.s3.localhost", allowed) == "s3.localhost"
    assert virtual_host_domain("s3.localhost", allowed) is None
    assert virtual_host_domain("b.localhost", allowed) == "localhost"
