"""addons.cli.byte_size: the size syntax of command-line options (CLI and bench)."""

from __future__ import annotations

import argparse

import pytest

from addons.cli import byte_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("123", 123), ("2 KiB", 2048), ("64MiB", 64 << 20), ("64m", 64 << 20),
     ("1gb", 1 << 30), ("5GiB", 5 << 30), ("1T", 1 << 40)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "1.5GiB", "-1", "\u00b2", "12PiB"])
def test_not_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(text)
