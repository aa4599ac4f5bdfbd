"""Entry script for ``mitmdump -s addons/gateway.py``: the gateway's addon chain."""

addons: list[object] = []
