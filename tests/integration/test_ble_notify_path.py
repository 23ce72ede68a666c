"""Where the BLE driver records a notification: in the bleak callback on the BLE loop, once the
device thread services the connection (queued before that, and recorded first)."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.config import EmgBleConfig, EmgSimulatorConfig
from needlelab.devices.base import DeviceError
from needlelab.devices.ble_sensor import EmgBleSensor
from needlelab.devices.emg_codecs import encode_frames
from needlelab.hub import Hub
from needlelab.profiles import load_emg_profile

PROFILE = "needlelab-emg-ref"


def reference_frames(n: int) -> tuple[list[bytes], np.ndarray]:
    """n reference EMG frames (counter 0..n-1) and their samples as int16 counts."""
    frame = load_emg_profile(PROFILE).frame
    rng = np.random.default_rng(7)
    counts = rng.integers(-2000, 2000, (n, frame.samples_per_frame, frame.channels))
    counts = counts.astype(np.int16)
    seq = np.arange(n, dtype=np.int64)
    encoded = encode_frames(frame, 1, seq, seq * 5000, counts)
    return [payload for _turn, payload in encoded], counts


def sensor_and_hub() -> tuple[EmgBleSensor, Hub]:
    hub = Hub(SessionClock())
    config = EmgBleConfig(
        kind="emg_ble", name="emg", profile=PROFILE, simulator=EmgSimulatorConfig(seed=1)
    )
    sensor = EmgBleSensor(config, hub)
    hub.add_stream(sensor.spec)  # as `start()` does, without its thread: this test is that
    return sensor, hub


def test_a_notification_is_in_the_ring_when_the_bleak_callback_returns() -> None:
    sensor, hub = sensor_and_hub()
    frames, _ = reference_frames(3)
    ring = hub.ring(sensor.spec.name)
    sensor._service(0.0)  # the device thread services the connection
    for k, payload in enumerate(frames):
        sensor._on_notify(0, None, bytearray(payload))  # as bleak calls it, on the BLE loop
        assert ring.total == (k + 1) * 10


def test_notifications_before_the_connection_is_serviced_come_first_and_in_order() -> None:
    sensor, hub = sensor_and_hub()
    frames, counts = reference_frames(6)
    scale = load_emg_profile(PROFILE).frame.scale_uv
    for payload in frames[:4]:  # while the device thread is still connecting: queued
        sensor._on_notify(0, None, bytearray(payload))
    ring = hub.ring(sensor.spec.name)
    assert ring.total == 0
    sensor._service(0.0)
    assert ring.total == 40
    for payload in frames[4:]:
        sensor._on_notify(0, None, bytearray(payload))
    assert ring.total == 60
    assert sensor.stats.gaps == 0 and sensor.stats.malformed == 0
    _, values = ring.latest(60)  # in the order the frames were sent
    np.testing.assert_allclose(values, counts.reshape(60, -1) * scale, rtol=1e-6)


def test_a_recording_that_fails_on_the_ble_loop_is_raised_by_the_device_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sensor, hub = sensor_and_hub()
    frames, _ = reference_frames(3)
    sensor._service(0.0)

    def broken_push(_chunk: object) -> None:
        raise DeviceError("the hub refused it")

    monkeypatch.setattr(hub, "push", broken_push)
    sensor._on_notify(0, None, bytearray(frames[0]))  # must not raise into bleak/bumble
    sensor._on_notify(0, None, bytearray(frames[1]))  # after a failure: queued, then dropped
    with pytest.raises(DeviceError, match="refused"):
        sensor._service(0.0)
    with pytest.raises(queue.Empty):
        sensor._inbox.get_nowait()
