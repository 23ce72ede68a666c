"""EMG profiles through the real driver: hand-fed Myo and MyoWare peripherals, the simulator
speaking each profile, and scheduled bad frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from needlelab.ble.bumble_backend import forget_local_link, local_link
from needlelab.ble.loop import BleLoop
from needlelab.clock import SessionClock
from needlelab.config import EmgBleConfig
from needlelab.devices.ble_sensor import EmgBleSensor
from needlelab.events import GapEvent
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
            # The driver subscribes after its connect-time writes and reads: wait for the last.
            handle = periph.characteristics[gatt.data[-1].lower()].handle
            subscribers = periph.device.gatt_server.subscribers
            for _ in range(500):
                if any(cccd.get(handle) for cccd in subscribers.values()):
                    break
                await asyncio.sleep(0.01)
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
    # set_mode (raw EMG, no IMU, no classifier), then set_sleep_mode never (myohw.h)
    assert periph.written[control] == [bytes([0x01, 0x03, 0x03, 0x00, 0x00]), bytes([9, 1, 1])]
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


def loss_runs(lost: list[int]) -> list[int]:
    """Lengths of the runs of consecutive lost sequence numbers."""
    runs: list[int] = []
    previous = None
    for seq in sorted(lost):
        if previous is not None and seq == previous + 1:
            runs[-1] += 1
        else:
            runs.append(1)
        previous = seq
    return runs


def test_simulated_myo_losses_are_found_exactly_from_the_characteristics_turns(
    sim_ble: Callable[..., Any], ble_sensor: Callable[..., Any]
) -> None:
    # No counter on the Myo: the four characteristics taking turns are the only count there is.
    sim = sim_ble("emg_ble", profile="thalmic-myo-raw", loss=0.04, jitter_ms=20, seed=4)
    device, hub = ble_sensor(sim)
    events: list[Any] = []
    hub.subscribe(events.append)
    wait_until(lambda: device.stats.samples >= 1000, timeout_s=15, what="5 s of Myo data")
    device.stop()
    gaps = [e.samples_lost // 2 for e in events if isinstance(e, GapEvent)]
    runs = loss_runs(sim.sensor.lost_frames)
    assert len(gaps) >= 5
    # Every gap is one run of lost notifications, exactly; runs lost before the driver subscribed
    # or after it stopped are not its to see.
    offsets = [o for o in range(len(runs)) if runs[o : o + len(gaps)] == gaps]
    assert offsets and offsets[0] <= 2 and len(runs) - offsets[0] - len(gaps) <= 2
    assert not any(e.inferred for e in events if isinstance(e, GapEvent))


def test_simulated_myoware_sends_ascii_readings_at_its_rate(
    sim_ble: Callable[..., Any], ble_sensor: Callable[..., Any]
) -> None:
    sim = sim_ble("emg_ble", profile="myoware-shield", seed=2)
    device, hub = ble_sensor(sim)
    wait_until(lambda: device.stats.samples >= 300, timeout_s=10, what="3 s of readings")
    t_ns, values = hub.ring("emg.emg").latest()
    assert device.stats.malformed == 0
    assert values.min() >= 0 and values.max() <= 1023 and values.std() > 5  # a 10-bit ADC
    rate = (len(t_ns) - 1) / ((t_ns[-1] - t_ns[0]) / 1e9)
    assert 90 < rate < 110  # the profile's 100 Hz


def test_scheduled_garbage_and_truncated_frames_are_counted_and_the_counter_sizes_the_gap(
    sim_ble: Callable[..., Any], ble_sensor: Callable[..., Any]
) -> None:
    faults = [
        {"kind": "garbage", "at_s": 1.5, "count": 7},
        {"kind": "truncate", "at_s": 2.0, "count": 3},
    ]
    sim = sim_ble("emg_ble", faults=faults)
    device, hub = ble_sensor(sim)
    events: list[Any] = []
    hub.subscribe(events.append)
    wait_until(lambda: device.stats.malformed >= 10, timeout_s=10, what="bad frames counted")
    before = device.stats.samples
    wait_until(lambda: device.stats.samples > before + 2000, timeout_s=5, what="still streaming")
    assert device.stats.malformed == 10 and device.state.value == "streaming"
    gaps = [e for e in events if isinstance(e, GapEvent)]
    # Three frames in a row cut short: one gap, sized exactly by the sequence counter.
    assert [(g.samples_lost, g.inferred) for g in gaps] == [(30, False)]
