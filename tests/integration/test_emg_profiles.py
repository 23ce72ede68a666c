"""Third-party EMG profiles through the real driver: a Myo-like and a MyoWare-like peripheral."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from needlelab.ble.bumble_backend import forget_local_link, local_link
from needlelab.ble.loop import BleLoop
from needlelab.clock import SessionClock
from needlelab.config import EmgBleConfig
from needlelab.devices.ble_sensor import EmgBleSensor
from needlelab.hub import Hub
from needlelab.profiles import load_emg_profile
from needlelab.sim.ble_peripheral import CharacteristicSpec, GattPeripheral, ServiceSpec
from needlelab.testing.plugin import wait_until


def run_profile(
    profile_name: str, link_name: str, payloads: list[tuple[int, bytes]], control: str | None = None
) -> tuple[EmgBleSensor, Hub, GattPeripheral]:
    """Serve `payloads` ((data characteristic number, bytes)) once the driver subscribed."""
    profile = load_emg_profile(profile_name)
    gatt = profile.gatt
    chars = [CharacteristicSpec(u, ("read", "notify")) for u in gatt.data]
    if control:
        chars.append(CharacteristicSpec(control, ("write",)))
    ble = BleLoop.acquire()
    holder: dict[str, Any] = {}

    async def make() -> None:
        holder["p"] = GattPeripheral(
            local_link(link_name), f"Sim-{link_name}", [ServiceSpec(gatt.service, chars)]
        )
        await holder["p"].start()

    ble.run(make(), timeout_s=5)
    periph: GattPeripheral = holder["p"]
    hub = Hub(SessionClock())
    driver = EmgBleSensor(
        EmgBleConfig(
            kind="emg_ble",
            name="emg",
            profile=profile_name,
            backend="bumble",
            bumble_transport=f"local:{link_name}",
            advertised_name=f"Sim-{link_name}",
        ),
        hub,
    )
    driver.start()
    try:
        wait_until(lambda: driver._client is not None, timeout_s=10, what="connected")

        async def send() -> None:
            await asyncio.sleep(0.3)  # the driver subscribes right after connecting
            for which, payload in payloads:
                await periph.notify(gatt.data[which], payload)

        ble.run(send(), timeout_s=10)
        wait_until(
            lambda: driver.stats.samples >= expected_samples(profile_name, payloads),
            timeout_s=5,
            what="all samples",
        )
    finally:
        driver.stop()

        async def stop() -> None:
            await periph.stop()

        ble.run(stop(), timeout_s=5)
        ble.release()
        forget_local_link(link_name)
    return driver, hub, periph


def expected_samples(profile_name: str, payloads: list[tuple[int, bytes]]) -> int:
    per = 2 if profile_name == "thalmic-myo-raw" else 1
    good = [p for _, p in payloads if (len(p) == 16 if per == 2 else p[:1].isdigit())]
    return per * len(good)


def test_myo_raw_four_characteristics_in_turn_and_set_mode() -> None:
    rng = np.random.default_rng(5)
    raw = rng.integers(-128, 128, (40, 2, 8)).astype(np.int8)
    payloads = [(i % 4, raw[i].tobytes()) for i in range(40)]
    control = "d5060401-a904-deb9-4748-2c7f4a124842"
    driver, hub, periph = run_profile("thalmic-myo-raw", "myo", payloads, control)
    assert periph.written[control] == [bytes([0x01, 0x03, 0x03, 0x00, 0x00])]
    _t, values = hub.ring("emg.emg").latest()
    assert np.array_equal(values, raw.reshape(80, 8).astype(np.float32))
    assert driver.stats.malformed == 0
    assert hub.streams["emg.emg"].units == ("au",) * 8
    assert hub.streams["emg.emg"].nominal_rate_hz == 200


def test_myoware_ascii_values() -> None:
    payloads = [(0, f"{v:.1f}".encode()) for v in (512.0, 530.5, 0.0, 1023.0)] + [(0, b"\xffx")]
    driver, hub, _periph = run_profile("myoware-shield", "myoware", payloads)
    _t, values = hub.ring("emg.emg").latest()
    assert values[:, 0].tolist() == [512.0, 530.5, 0.0, 1023.0]
    assert driver.stats.malformed == 1
