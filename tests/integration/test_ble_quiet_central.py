"""What needlelab's bumble central does per notification: bumble's steps, without formatting
packets for a debug log that is off (and with it, when it is on)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bumble import controller as bumble_controller
from bumble import gatt_client
from bumble.link import LocalLink

from needlelab.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
from needlelab.sim.ble_peripheral import CharacteristicSpec, GattPeripheral, ServiceSpec

SERVICE = "ec3af789-2154-49f4-a9fc-bc6c88e9e930"
DATA = "f3a56edf-8f1e-4533-93bf-5601b2e91308"
NOTIFICATIONS = 20


class DebugSpy:
    """Every message a bumble module's logger was asked to log at debug level, enabled or not
    (bumble formats it first, into an f-string)."""

    def __init__(self, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messages: list[str] = []
        debug = logger.debug

        def spy(msg: object, *args: Any, **kwargs: Any) -> None:
            self.messages.append(str(msg))
            debug(msg, *args, **kwargs)

        monkeypatch.setattr(logger, "debug", spy)


async def notify_through_central() -> list[bytes]:
    """A bumble peripheral notifies `NOTIFICATIONS` values to bleak through the bumble central."""
    link = LocalLink()  # type: ignore[no-untyped-call]  # bumble: untyped
    periph = GattPeripheral(
        link, "SimQuiet", [ServiceSpec(SERVICE, [CharacteristicSpec(DATA, ("read", "notify"))])]
    )
    await periph.start()
    got: list[bytes] = []
    try:
        device = await BleakScanner.find_device_by_name(
            "SimQuiet", timeout=3.0, backend=BumbleScanner, bumble_transport=link
        )
        assert device is not None
        client = BleakClient(device, backend=BumbleClient, bumble_transport=link)
        await client.connect()
        await client.start_notify(DATA, lambda _c, v: got.append(bytes(v)))
        for i in range(NOTIFICATIONS):
            await periph.notify(DATA, f"n{i}".encode())
        for _ in range(100):
            if len(got) == NOTIFICATIONS:
                break
            await asyncio.sleep(0.01)
        await client.disconnect()
    finally:
        await periph.stop()
        await BumbleCentral.close_all()
    return got


def central_data_messages(controller: DebugSpy, client: DebugSpy) -> list[str]:
    """What the central's controller and GATT client formatted for notification data: an ACL
    packet to its host, or a notification PDU."""
    return [m for m in controller.messages if "[central-" in m and "ACL\x1b[0m: handle=" in m] + [
        m for m in client.messages if "ATT_HANDLE_VALUE_NOTIFICATION" in m
    ]


def test_central_formats_no_notification_for_a_debug_log_that_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bumble's own Controller and gatt Client build each of these strings per notification.
    for name in ("bumble.controller", "bumble.gatt_client"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.INFO)
    controller = DebugSpy(bumble_controller.logger, monkeypatch)
    client = DebugSpy(gatt_client.logger, monkeypatch)
    got = asyncio.run(notify_through_central())
    assert got == [f"n{i}".encode() for i in range(NOTIFICATIONS)]
    assert central_data_messages(controller, client) == []


def test_central_still_logs_every_notification_when_debug_is_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    controller = DebugSpy(bumble_controller.logger, monkeypatch)
    client = DebugSpy(gatt_client.logger, monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="bumble"):
        got = asyncio.run(notify_through_central())
    assert got == [f"n{i}".encode() for i in range(NOTIFICATIONS)]
    formatted = central_data_messages(controller, client)
    notifications = [m for m in formatted if "ATT_HANDLE_VALUE_NOTIFICATION" in m]
    assert len(notifications) == NOTIFICATIONS
    # The central's controller handed its host at least one ACL packet per notification.
    assert len(formatted) - len(notifications) >= NOTIFICATIONS
    logged = {r.getMessage() for r in caplog.records}
    assert all(m in logged for m in formatted)
