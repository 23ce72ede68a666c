"""Device facts in the file (issue 13, point 9): a Myo is told never-sleep on connect, its
firmware and info characteristics are read, and the address and battery level (over time) are
stored as `device.info` events, judged against the simulator's own log and bytes typed from
Thalmic's myohw.h."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from needlelab.clinic.report import write_report
from needlelab.config import ConfigError, parse_config
from needlelab.events import DeviceInfoEvent, DeviceStateEvent
from needlelab.profiles import load_emg_profile
from needlelab.record import load, open_session
from needlelab.record.deidentify import DeidentifyKey, deidentify
from needlelab.record.verify import format_info, info_report
from needlelab.session import Session
from needlelab.sim.emg_sensor import SimulatedEmgSensor
from needlelab.testing.plugin import wait_until

# Typed from myohw.h, not from the profile or the simulator.
COMMAND = "d5060401-a904-deb9-4748-2c7f4a124842"  # CommandCharacteristic 0x0401
FIRMWARE = "d5060201-a904-deb9-4748-2c7f4a124842"  # FirmwareVersionCharacteristic 0x0201
INFO = "d5060101-a904-deb9-4748-2c7f4a124842"  # MyoInfoCharacteristic 0x0101
SET_MODE_RAW = bytes([0x01, 0x03, 0x03, 0x00, 0x00])  # set_mode, 3 bytes: EMG raw, no IMU/cls
NEVER_SLEEP = bytes([0x09, 0x01, 0x01])  # set_sleep_mode, 1 byte: myohw_sleep_mode_never_sleep
FW_VERSION_T = "<HHHH"  # myohw_fw_version_t: major, minor, patch, hardware_rev
SHIPPED = Path(__file__).parents[2] / "drivers" / "thalmic-myo-raw.toml"


def myo_config(tmp_path: Path, profile: str, **simulator: Any) -> Any:
    return parse_config(
        {
            "session": {"patient_id": "MYO01", "out_dir": str(tmp_path)},
            "devices": [
                {
                    "kind": "emg_ble",
                    "name": "myo",
                    "profile": profile,
                    "stall_timeout_s": 1.0,
                    "reconnect_min_s": 0.1,
                    "reconnect_max_s": 0.5,
                    "simulator": {"seed": 2, **simulator},
                }
            ],
        }
    )


def record(config: Any, seconds: float) -> tuple[Path, dict[str, Any]]:
    """Record for `seconds` after the first samples; the file and the simulator's truth."""
    session = Session(config)
    session.start()
    try:
        wait_until(lambda: session.devices["myo"].stats.samples > 0, timeout_s=15, what="EMG")
        time.sleep(seconds)
        assert session.simulators is not None
        sim = session.simulators.ble_devices["myo"]  # type: ignore[union-attr]
        assert isinstance(sim, SimulatedEmgSensor)
    finally:
        session.stop()
    return session.path, sim.truth()


def infos(path: Path) -> list[dict[str, Any]]:
    with open_session(path) as s:
        return [e.info for e in s.events("device.info") if isinstance(e, DeviceInfoEvent)]


def command_writes(truth: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(value) for _t, uuid, value in truth["writes"] if uuid == COMMAND]


def test_myo_gets_never_sleep_and_its_facts_and_battery_are_in_the_file(tmp_path: Path) -> None:
    config = myo_config(tmp_path, "thalmic-myo-raw", sleep_after_s=1.0, battery_drop_every_s=0.6)
    path, truth = record(config, seconds=3.5)
    # What the armband was sent, from its own log: set_mode, then never-sleep; it stayed awake.
    assert command_writes(truth) == [SET_MODE_RAW, NEVER_SLEEP]
    assert truth["sleep_mode"] == 1 and truth["asleep_ns"] is None
    rows = infos(path)
    first = rows[0]
    assert first["address"] == truth["address"]
    fw = bytes.fromhex(truth["info_served"][FIRMWARE])
    major, minor, patch, hw = struct.unpack(FW_VERSION_T, fw)
    assert first["firmware"] == {"major": major, "minor": minor, "patch": patch, "hardware_rev": hw}
    info = bytes.fromhex(truth["info_served"][INFO])
    assert len(info) == 20  # sizeof(myohw_fw_info_t)
    # myohw_fw_info_t offsets: serial 0-5, unlock_pose 6-7 (LE), then one byte each, reserved.
    assert first["info"]["serial_number"] == info[0:6].hex()
    assert first["info"]["unlock_pose"] == info[6] | info[7] << 8
    assert first["info"]["active_classifier_type"] == info[8]
    assert first["info"]["active_classifier_index"] == info[9]
    assert first["info"]["has_custom_classifier"] == info[10]
    assert first["info"]["stream_indicating"] == info[11]
    assert first["info"]["sku"] == info[12]
    assert first["info"]["reserved"] == info[13:20].hex()
    assert first["writes_hex"] == {"start": SET_MODE_RAW.hex(), "never_sleep": NEVER_SLEEP.hex()}
    assert first["profile_sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    # The battery over time: each level the simulator served from the connect on, once each.
    recorded = [r["battery_pct"] for r in rows if "battery_pct" in r]
    served = [float(pct) for _t, pct in truth["battery"]]
    assert len(recorded) >= 4  # 90 at connect, then drops every 0.6 s over 3.5 s
    assert recorded[0] in served
    # A level served between the connect's read and the notification subscription can be missed
    # (seen on a loaded machine: 89, then 87): from the first notified level on, every one.
    start = served.index(recorded[1])
    assert served.index(recorded[0]) < start
    assert recorded[1:] == served[start : start + len(recorded) - 1]
    assert len(served) - (start + len(recorded) - 1) <= 1  # at most a drop after the stop
    # Awake past sleep_after_s: data to the end.
    with open_session(path) as s:
        t_ns, _values = s.stream("myo.emg")
        assert s.meta["closed_t_ns"] - t_ns[-1] < 0.5e9
    text = format_info(info_report(path))
    assert f"firmware {major}.{minor}.{patch}" in text and truth["address"] in text
    assert f"battery {recorded[0]:g} → {recorded[-1]:g} %" in text
    # A de-identified view keeps the battery and drops this unit's address and serial number.
    view = deidentify(load(path), DeidentifyKey(tmp_path / "key.json"))
    kept = [e.info for e in view.events if isinstance(e, DeviceInfoEvent)]
    assert [r["battery_pct"] for r in kept if "battery_pct" in r] == recorded
    scrubbed = repr(kept).lower()
    assert truth["address"].lower() not in scrubbed and info[0:6].hex() not in scrubbed
    html = write_report(path, tmp_path).read_text()
    assert f'<p class="device-facts">myo: address {truth["address"]}, firmware ' in html


def test_a_myo_not_told_never_sleep_sleeps_and_the_recording_stops(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    start = text.index("[[gatt.writes]]")
    end = text.index("[[gatt.info]]")
    no_writes = tmp_path / "myo-no-never-sleep.toml"
    no_writes.write_text(text[:start] + text[end:])
    assert not load_emg_profile(no_writes).gatt.writes
    path, truth = record(myo_config(tmp_path, str(no_writes), sleep_after_s=1.0), seconds=3.0)
    # set_mode on each connect (the watchdog reconnects to the sleeping armband), never sleep mode
    writes = command_writes(truth)
    assert writes and set(writes) == {SET_MODE_RAW}
    assert truth["sleep_mode"] == 0 and truth["asleep_ns"] is not None
    with open_session(path) as s:
        asleep = truth["asleep_ns"] - s.meta["anchor_monotonic_ns"]
        t_ns, _values = s.stream("myo.emg")
        states = [e.state for e in s.events("device.state") if isinstance(e, DeviceStateEvent)]
        # Nothing after it fell asleep (one connection interval and the latency floor aside),
        # and the watchdog said so.
        assert t_ns[-1] < asleep + 0.1e9
        assert s.meta["closed_t_ns"] - t_ns[-1] > 1.0e9
    assert "stalled" in states


FW_LINES = 'layout = "<4H"\nfields = ["major", "minor", "patch", "hardware_rev"]'


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('layout = ">4H"\nfields = ["major", "minor", "patch", "hw"]', "little-endian"),
        ('layout = "<3H"\nfields = ["major", "minor", "patch", "hw"]', "3 values but 4 fields"),
        ('layout = "<4Q!"\nfields = ["major", "minor", "patch", "hw"]', "bad struct layout"),
        ('layout = "<4H"\nfields = ["major", "major", "patch", "hw"]', "field names repeat"),
        ('layout = "<4H"\nfields = ["Major", "minor", "patch", "hw"]', "gatt.info[0].fields"),
        ('layout = "<4H"\nfields = []', "gatt.info[0].fields"),
    ],
)
def test_info_characteristics_are_checked_strictly(
    tmp_path: Path, lines: str, message: str
) -> None:
    text = SHIPPED.read_text()
    assert FW_LINES in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(FW_LINES, lines))
    with pytest.raises(ConfigError) as err:
        load_emg_profile(bad)
    assert message in str(err.value)


@pytest.mark.parametrize("payload", ["0901zz", "", "00" * 21])
def test_connect_writes_must_be_hex_of_one_write(tmp_path: Path, payload: str) -> None:
    text = SHIPPED.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('payload = "090101"', f'payload = "{payload}"'))
    with pytest.raises(ConfigError) as err:
        load_emg_profile(bad)
    assert "gatt.writes" in str(err.value)


def test_a_battery_without_notifications_is_re_read_and_each_change_recorded(
    tmp_path: Path,
) -> None:
    """The reference EMG profile with a 0.3 s battery poll, against a hand-made peripheral whose
    battery level can only be read: the levels it held, in order, are the driver's rows."""

    from needlelab.ble.bumble_backend import forget_local_link, local_link
    from needlelab.ble.loop import BleLoop
    from needlelab.clock import SessionClock
    from needlelab.config import EmgBleConfig
    from needlelab.devices.ble_sensor import EmgBleSensor
    from needlelab.hub import Hub
    from needlelab.sim.ble_peripheral import CharacteristicSpec, GattPeripheral, ServiceSpec

    shipped = SHIPPED.with_name("needlelab-emg-ref.toml").read_text()
    assert 'battery = "2a19"\n' in shipped
    profile = tmp_path / "ref-poll.toml"
    profile.write_text(
        shipped.replace('battery = "2a19"\n', 'battery = "2a19"\nbattery_poll_s = 0.3\n')
    )
    gatt = load_emg_profile(profile).gatt
    ble = BleLoop.acquire()
    holder: dict[str, GattPeripheral] = {}

    async def make() -> None:
        chars = [CharacteristicSpec(u, ("read", "notify")) for u in gatt.data]
        holder["p"] = GattPeripheral(
            local_link("facts-poll"),
            "Sim-facts-poll",
            [
                ServiceSpec(gatt.service, chars),
                ServiceSpec("180f", [CharacteristicSpec("2a19", ("read",), b"\x50")]),
            ],
        )
        await holder["p"].start()

    ble.run(make(), timeout_s=5)
    periph = holder["p"]
    hub = Hub(SessionClock())
    rows: list[dict[str, Any]] = []
    hub.subscribe(lambda e: rows.append(e.info) if isinstance(e, DeviceInfoEvent) else None)
    driver = EmgBleSensor(
        EmgBleConfig(
            kind="emg_ble",
            name="emg",
            profile=str(profile),
            backend="bumble",
            bumble_transport="local:facts-poll",
            advertised_name="Sim-facts-poll",
            stall_timeout_s=30,  # it sends no data: no stall and reconnect in the test's time
        ),
        hub,
    )
    driver.start()
    try:
        wait_until(lambda: len(rows) >= 1, timeout_s=10, what="the connect's device.info")
        for level in (b"\x4f", b"\x4f", b"\x4e"):  # 80 at connect, then 79 (held), 78
            periph.set_value("2a19", level)
            time.sleep(0.8)  # more than two polls
    finally:
        driver.stop()
        ble.run(periph.stop(), timeout_s=5)
        ble.release()
        forget_local_link("facts-poll")
    assert rows[0]["address"] == str(periph.address)
    assert rows[0]["writes_hex"] == {}  # the reference profile declares no commands
    # One connect (80), then each change once (79 held across polls is not repeated).
    assert [r["battery_pct"] for r in rows] == [80.0, 79.0, 78.0]
    assert ["profile" in r for r in rows] == [True, False, False]
