"""Gateway configuration trees shared by the settings tests."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.example.yaml"


def minimal_config() -> dict[str, Any]:
    """The smallest valid configuration tree (a fresh copy each call)."""
    return {
        "backend": {"url": "http://127.0.0.1:9000", "access_key_id": "a", "secret_access_key": "b"},
        "credentials": [{"access_key_id": "AK", "secret_access_key": "SK"}],
        "keyring": {
            "active": "k1",
            "keys": {"k1": {"base64": base64.b64encode(b"k" * 32).decode()}},
        },
    }
