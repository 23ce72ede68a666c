"""Data-quality counts, piece by piece: resyncs of the stimulator decoders on hand-written bytes,
the run and repeat helpers of the BLE decoders, and when a device records `device.quality`.

The expected counts are worked out by hand from the protocols' rules (drivers/README.md): each
malformed unit is one malformed message, and each run of them between valid messages is one
resync. The whole path, simulators to the file, is tests/integration/test_data_quality.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.config import StimManualConfig
from needlelab.devices.base import Device
from needlelab.devices.codecs import StimProtocol
from needlelab.devices.emg_codecs import repeats, runs_begun
from needlelab.events import DataQualityEvent, Event
from needlelab.hub import Hub
from needlelab.profiles import load_stim_profile
from needlelab.sim.faults import WireKind, WireLog
from needlelab.streams import StreamSpec

# Frames typed from the needlelab frame protocol (CRC-16/CCITT-FALSE from a bitwise reference;
# the same vectors as tests/unit/test_codecs.py).
CHANGED_2 = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 01 7e a3 0f")
STATUS_1 = bytes.fromhex("f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f")
BAD_CRC = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 00 7e a3 0f")  # output byte changed
CUT = CHANGED_2[:6]  # no stop byte: the next start byte cuts it short
OVERLONG = b"\xf0" + b"A" * 80 + b"\x0f"  # longer than max_packet_bytes (69)
# good, noise between frames + bad CRC (one run), good, cut short, good, over-long, good
FRAME_WIRE = CHANGED_2 + b"noise" + BAD_CRC + STATUS_1 + CUT + STATUS_1 + OVERLONG + CHANGED_2
FRAME_COUNTS = (4, 3, 4)  # malformed, resyncs, valid

STAT = b"STAT CH1 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n"
CHG = b"CHG CH2 F=100.0 PW=400 I=0.00 W=MONO M=BRST OUT=0\n"
# good, undecodable + matching no message (one run), good, over-long (> 128 bytes), good
LINE_WIRE = STAT + b"\xff junk\n" + b"garbage\n" + CHG + b"A" * 200 + b"\n" + STAT
LINE_COUNTS = (3, 2, 3)


def decode_in_reads(protocol: StimProtocol, wire: bytes, cuts: list[int]) -> tuple[int, int, int]:
    """(malformed, resyncs, valid messages) of `wire` read in pieces ending at `cuts`."""
    malformed = valid = resyncs = 0
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        messages, bad = protocol.decode(wire[a:b])
        malformed, valid = malformed + bad, valid + len(messages)
        resyncs += protocol.take_resyncs()
    return malformed, resyncs, valid


@pytest.mark.parametrize(
    ("profile", "wire", "counts"),
    [
        ("needlelab-stim-frame", FRAME_WIRE, FRAME_COUNTS),
        ("needlelab-stim-ascii", LINE_WIRE, LINE_COUNTS),
    ],
)
def test_stimulator_resyncs_are_runs_of_malformed_units_however_the_bytes_arrive(
    profile: str, wire: bytes, counts: tuple[int, int, int]
) -> None:
    profile_ = load_stim_profile(profile)
    assert decode_in_reads(StimProtocol(profile_), wire, []) == counts
    assert decode_in_reads(StimProtocol(profile_), wire, list(range(1, len(wire)))) == counts
    for cut in range(1, len(wire)):
        assert decode_in_reads(StimProtocol(profile_), wire, [cut]) == counts, cut


def test_a_run_of_garbage_split_across_reads_is_one_resync() -> None:
    protocol = StimProtocol(load_stim_profile("needlelab-stim-frame"))
    assert protocol.decode(CHANGED_2 + b"junk")[1] == 1
    assert protocol.decode(b"more junk" + BAD_CRC)[1] == 1  # the run goes on
    assert protocol.take_resyncs() == 1
    assert protocol.decode(STATUS_1 + BAD_CRC + STATUS_1)[1] == 1
    assert protocol.take_resyncs() == 1 and protocol.take_resyncs() == 0


def test_runs_begun_and_repeats() -> None:
    bad = np.array([True, True, False, True, False, False, True])
    assert runs_begun(bad, in_run=False) == 3
    assert runs_begun(bad, in_run=True) == 2  # the first run began in the batch before
    assert runs_begun(np.zeros(0, np.bool_), in_run=True) == 0
    counter = np.array([7, 7, 8, 9, 9, 9, 0, 0], dtype=np.int64)
    assert repeats(counter, None).tolist() == [0, 1, 0, 0, 1, 1, 0, 1]
    assert repeats(counter, 7).tolist() == [1, 1, 0, 0, 1, 1, 0, 1]
    assert repeats(np.array([65535, 0], dtype=np.int64), 65534).tolist() == [0, 0]  # a wrap


def test_the_wire_log_counts_runs_and_copies() -> None:
    log = WireLog()
    sent: list[tuple[WireKind, int]] = [
        ("valid", 3), ("malformed", 2), ("malformed", 5), ("valid", 1),
        ("duplicate", 1), ("malformed", 1), ("duplicate", 1), ("malformed", 1),
    ]  # fmt: skip
    for kind, n in sent:
        log.sent(kind, n)
    c = log.counts()
    assert (c.valid, c.malformed, c.duplicates, c.resyncs) == (4, 9, 2, 3)
    assert log.at(log.history[1].t_mono_ns).malformed == 7
    assert log.at(0).malformed == 0


class FakeClock(SessionClock):
    """A session clock that only moves when told (`t`)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0

    def now_ns(self) -> int:
        return self.t


class Counting(Device):
    """A device with no transport: the test calls the counting helpers itself."""

    def streams(self) -> list[StreamSpec]:
        return []

    def _connect(self) -> None:
        pass

    def _service(self, timeout_s: float) -> None:
        pass

    def _disconnect(self) -> None:
        pass


def test_quality_is_recorded_on_change_at_most_once_a_second() -> None:
    clock = FakeClock()
    hub = Hub(clock)
    events: list[Event] = []
    hub.subscribe(events.append)
    device = Counting(StimManualConfig(kind="stim_manual", name="dev"), hub)

    def recorded() -> list[tuple[int, int, int, int]]:
        return [
            (e.t_ns, e.malformed, e.duplicates, e.resyncs)
            for e in events
            if isinstance(e, DataQualityEvent) and e.source == "dev"
        ]

    device._record_quality("always")  # the start: zeros
    clock.t = 2_000_000_000
    device._count_malformed(3, resyncs=1)  # a second has passed since the last: at once
    clock.t = 2_500_000_000
    device._count_malformed(2, resyncs=1)
    device._count_duplicates(1)
    device._record_quality()  # the service loop: not due yet
    assert recorded() == [(0, 0, 0, 0), (2_000_000_000, 3, 0, 1)]
    clock.t = 3_000_000_000
    device._record_quality()  # due: the counts held back
    clock.t = 9_000_000_000
    device._record_quality()  # nothing changed: nothing recorded
    clock.t = 9_100_000_000
    device._count_duplicates(1)  # more than a second since the last: at once
    clock.t = 9_200_000_000
    device._count_malformed(1)
    device._record_quality("changed")  # a connection ended: now, whatever the rate
    device._record_quality("always")  # the stop
    assert recorded()[2:] == [
        (3_000_000_000, 5, 1, 2),
        (9_100_000_000, 5, 2, 2),
        (9_200_000_000, 6, 2, 2),
        (9_200_000_000, 6, 2, 2),
    ]
