"""Fails when bleak's backend interface moves under the pinned major version.

bleak documents its backend API as unstable; the bumble backend implements it. If an upgrade
adds an abstract method or changes a signature we implement, this test says so before a session
does.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from needlelab.ble.bumble_backend import BumbleClient, BumbleScanner

CLIENT_METHODS = {
    "connect": ["self", "pair", "kwargs"],
    "disconnect": ["self"],
    "pair": ["self", "args", "kwargs"],
    "unpair": ["self"],
    "read_gatt_char": ["self", "characteristic", "use_cached", "kwargs"],
    "read_gatt_descriptor": ["self", "descriptor", "use_cached", "kwargs"],
    "write_gatt_char": ["self", "characteristic", "data", "response"],
    "write_gatt_descriptor": ["self", "descriptor", "data"],
    "start_notify": ["self", "characteristic", "callback", "kwargs"],
    "stop_notify": ["self", "characteristic"],
}


def test_bleak_is_the_pinned_major_version() -> None:
    assert version("bleak").split(".")[0] == "3"


def test_abstract_interface_is_what_the_backend_implements() -> None:
    assert set(BaseBleakClient.__abstractmethods__) == set(CLIENT_METHODS) | {
        "mtu_size",
        "is_connected",
    }
    assert set(BaseBleakScanner.__abstractmethods__) == {"start", "stop"}
    assert not BumbleClient.__abstractmethods__ and not BumbleScanner.__abstractmethods__


def test_signatures_we_implement_are_unchanged() -> None:
    for name, params in CLIENT_METHODS.items():
        assert list(inspect.signature(getattr(BaseBleakClient, name)).parameters) == params, name
    init = inspect.signature(BaseBleakClient.__init__).parameters
    assert list(init) == [
        "self",
        "address_or_ble_device",
        "disconnected_callback",
        "timeout",
        "kwargs",
    ]
    scanner_init = inspect.signature(BaseBleakScanner.__init__).parameters
    assert list(scanner_init) == ["self", "detection_callback", "service_uuids"]
    for helper in ("create_or_update_device", "call_detection_callbacks", "is_allowed_uuid"):
        assert callable(getattr(BaseBleakScanner, helper))
