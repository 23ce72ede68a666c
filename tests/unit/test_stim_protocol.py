"""Byte-exact stimulator protocol tests: hand-written wire vectors, not produced by the code."""

from __future__ import annotations

import pytest

from needlelab.devices.codecs import (
    FrameCodec,
    LineCodec,
    StimProtocol,
    crc16_ccitt_false,
    wire_read_error,
)
from needlelab.events import StimSettings
from needlelab.profiles import FrameFraming, LineFraming, load_stim_profile


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE the slow, obvious way, as an independent reference."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


ASCII = StimProtocol(load_stim_profile("needlelab-stim-ascii"))
FRAME = StimProtocol(load_stim_profile("needlelab-stim-frame"))
SETTINGS = StimSettings(
    channel=2,
    frequency_hz=2.0,
    pulse_width_us=250,
    intensity_ma=12.5,
    waveform="biphasic",
    mode="continuous",
    output_on=True,
)


def query(protocol: StimProtocol, name: str) -> object:
    return next(q for q in protocol.profile.queries if q.name == name)


def test_crc_matches_the_standard_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1 == crc16_bitwise(b"123456789")
    for data in (b"\x01", b"\x10\x02", bytes(range(60))):
        assert crc16_ccitt_false(data) == crc16_bitwise(data)


def test_ascii_queries_on_the_wire() -> None:
    assert ASCII.encode_query(query(ASCII, "identify")) == b"*IDN?\n"  # type: ignore[arg-type]
    assert ASCII.encode_query(query(ASCII, "status"), 2) == b"STAT? 2\n"  # type: ignore[arg-type]


def test_ascii_replies_decode_exactly() -> None:
    wire = (
        b"NEEDLELAB,SIMSTIM,SN7,2.1\r\n"
        b"STAT CH2 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n"
        b"CHG CH1 F=100.0 PW=400 I=0.00 W=MONO M=BRST OUT=0\n"
    )
    messages, malformed = ASCII.decode(wire)
    assert malformed == 0
    assert [m.message for m in messages] == ["identity", "status", "change"]
    assert messages[0].fields == {"model": "SIMSTIM", "serial": "SN7", "firmware": "2.1"}
    assert messages[1].settings() == SETTINGS
    assert messages[2].settings() == StimSettings(
        channel=1,
        frequency_hz=100.0,
        pulse_width_us=400,
        intensity_ma=0.0,
        waveform="monophasic",
        mode="burst",
        output_on=False,
    )
    assert (
        ASCII.encode_message("change", SETTINGS.model_dump())
        == b"CHG CH2 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n"
    )


def test_ascii_split_across_reads_and_malformed_lines() -> None:
    protocol = StimProtocol(load_stim_profile("needlelab-stim-ascii"))
    line = b"STAT CH2 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n"
    got, bad = protocol.decode(line[:10])
    assert (got, bad) == ([], 0)
    got, bad = protocol.decode(
        line[10:]
        + b"STAT CH2 F=2.0 PW=25\n"
        + b"\xff\xfe\n"
        + b"STAT CH2 F=2.0 PW=250 I=999.00 W=BI M=CONT OUT=1\n"
        + b"x" * 500
        + b"\n"
        + line
    )
    assert [m.settings() for m in got] == [SETTINGS, SETTINGS]
    assert bad == 4  # truncated, binary junk, out-of-range intensity, over-long line


def test_frame_queries_on_the_wire() -> None:
    # payload 01, CRC16(01) = F1 D1
    assert FRAME.encode_query(query(FRAME, "identify")) == bytes.fromhex("f0 01 f1 d1 0f")  # type: ignore[arg-type]
    crc = crc16_bitwise(b"\x10\x02")
    assert FRAME.encode_query(query(FRAME, "status"), 2) == (  # type: ignore[arg-type]
        b"\xf0\x10\x02" + crc.to_bytes(2, "big") + b"\x0f"
    )


def test_frame_status_decodes_exactly() -> None:
    # id 11, ch 02, freq 20 (0.1 Hz) = 14 00, pw 250 = fa 00, current 1250 (10 uA) = e2 04,
    # biphasic 01, continuous 00, on 01
    payload = bytes.fromhex("11 02 14 00 fa 00 e2 04 01 00 01")
    wire = b"\xf0" + payload + crc16_bitwise(payload).to_bytes(2, "big") + b"\x0f"
    messages, malformed = FRAME.decode(wire)
    assert malformed == 0
    assert messages[0].message == "status" and messages[0].settings() == SETTINGS
    assert FRAME.encode_message("status", SETTINGS.model_dump()) == wire


def test_frame_stuffing_vectors() -> None:
    codec = FrameCodec(
        FrameFraming(type="frame", start=0xF0, stop=0x0F, escape=0x81, escape_xor=0x55)
    )
    payload = bytes([0x12, 0xF0, 0x0F, 0x81, 0x00])
    crc = crc16_bitwise(payload).to_bytes(2, "big")
    stuffed_crc = b"".join(
        bytes([0x81, b ^ 0x55]) if b in (0xF0, 0x0F, 0x81) else bytes([b]) for b in crc
    )
    expected = b"\xf0\x12\x81\xa5\x81\x5a\x81\xd4\x00" + stuffed_crc + b"\x0f"
    assert codec.encode(payload) == expected
    assert codec.feed(expected) == ([payload], 0)


def test_frame_decoder_resynchronises_after_damage() -> None:
    protocol = StimProtocol(load_stim_profile("needlelab-stim-frame"))
    good = FRAME.encode_message("status", SETTINGS.model_dump())
    corrupt = bytearray(good)
    corrupt[4] ^= 0x01  # CRC no longer matches
    cut = good[:6]  # no stop byte: the next start byte cuts it off
    got, bad = protocol.decode(b"junk" + good + bytes(corrupt) + cut + good + b"\x81")
    assert [m.settings() for m in got] == [SETTINGS, SETTINGS]
    assert bad == 4  # leading junk, bad CRC, cut-short frame, trailing stray byte
    got, bad = protocol.decode(good)
    assert len(got) == 1 and bad == 0


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_line_codec_never_raises_on_noise(size: int) -> None:
    import random

    rng = random.Random(size)
    codec = LineCodec(LineFraming(type="line", max_line_bytes=64))
    total_lines = 0
    for _ in range(50):
        lines, _ = codec.feed(rng.randbytes(size))
        total_lines += len(lines)
        assert all(len(line) <= 64 for line in lines)
    assert len(codec._buf) <= 64


# -- read-only by grammar, on the wire: bytes typed from drivers/README.md -----------------------

LINE_N = LineFraming(type="line", line_ending="\n", max_line_bytes=128)
LINE_CRLF = LineFraming(type="line", line_ending="\r\n", max_line_bytes=128)
FRAMES = FrameFraming(type="frame")  # the family's fixed bytes: F0, 0F, 81, 55


@pytest.mark.parametrize(
    "wire",
    [
        b"*IDN?\n",
        b"*OPC?\n",
        b"STAT? 1\n",
        b"STAT? 16\n",
        b"S3?\n",
        b"MEAS:CURR? 1,2\n",
        b":SOUR1:VOLT?\n",
        b"stat? ch1\n",
    ],
)
def test_line_reads_on_the_wire(wire: bytes) -> None:
    assert wire_read_error(LINE_N, wire) is None
    assert wire_read_error(LINE_CRLF, wire[:-1] + b"\r\n") is None


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"SET CH1 I=99.00 OUT=1\n", "not a read"),  # the needlelab ASCII write command
        (b"STOP\n", "not a read"),  # the other one
        (b"OUT 1\n", "not a read"),
        (b"STAT?;OUT 1\n", "not a read"),  # a second command behind a query
        (b"STAT? 1 OUT=1\n", "not a read"),
        (b"STAT?  1\n", "not a read"),
        (b"STAT? 1 \n", "not a read"),
        (b"?\n", "not a read"),
        (b"\n", "not a read"),  # an empty line
        (b"STAT\xc3\xa9? 1\n", "not ASCII"),
        (b"STAT? 1", "no line ending"),
        (b"STAT? 1\nSTAT? 1\n", "more than one line"),
        (b"*IDN?\nSET CH1 OUT=1\n", "more than one line"),
        (b"STAT? 1\r\n", "more than one line"),  # a stray CR: not this profile's ending
        (b"STAT? " + b"1" * 200 + b"\n", "longer than max_line_bytes"),
    ],
)
def test_line_writes_and_malformed_lines_are_not_reads(wire: bytes, why: str) -> None:
    error = wire_read_error(LINE_N, wire)
    assert error is not None and error.startswith(why), error


@pytest.mark.parametrize(
    "wire",
    [
        "f0 01 f1 d1 0f",  # GET_ID
        "f0 10 01 0e 5d 0f",  # GET_STATUS 1
        "f0 10 02 3e 3e 0f",  # GET_STATUS 2
        "f0 10 03 2e 1f 0f",  # GET_STATUS 3
        "f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f",  # STATUS (a reply id; CRC stuffed)
    ],
)
def test_frame_reads_on_the_wire(wire: str) -> None:
    assert wire_read_error(FRAMES, bytes.fromhex(wire)) is None


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        # The write commands (drivers/README.md, "Write commands"), CRCs from crc16_bitwise:
        ("f0 41 01 01 c5 11 0f", "not a read: id 0x41 is a write"),  # SET_OUTPUT ch1 on
        ("f0 40 01 14 00 fa 00 c4 09 01 00 89 92 0f", "not a read: id 0x40 is a write"),
        ("f0 42 89 76 0f", "not a read: id 0x42 is a write"),  # STOP_ALL
        ("f0 20 01 00 00 0f", "a bad CRC"),
        ("f0 01 f1 d2 0f", "a bad CRC"),
        ("f0 01 f1 d1", "not one frame"),  # no stop byte
        ("01 f1 d1 0f", "not one frame"),  # no start byte
        ("f0 01 f1 d1 0f f0 01 f1 d1 0f", "more than one frame"),
        ("f0 01 f1 d1 0f 00", "not one frame"),  # a trailing byte
        ("f0 10 81 00 0e 5d 0f", "a bad escape"),  # escapes a byte that is not special
        ("f0 10 01 0e 5d 81 0f", "a bad escape"),  # a dangling escape
        ("f0 0f", "not one frame"),
        ("f0 " + "10 " * 70 + "0f", "longer than max_packet_bytes"),
    ],
)
def test_frame_writes_and_malformed_frames_are_not_reads(wire: str, why: str) -> None:
    error = wire_read_error(FRAMES, bytes.fromhex(wire))
    assert error is not None and error.startswith(why), error


def test_the_crc_vectors_of_the_write_frames_are_right() -> None:
    """The write frames above are real frames (valid CRC): refused for their id, not damage."""
    for payload, crc in [("41 01 01", 0xC511), ("40 01 14 00 fa 00 c4 09 01 00", 0x8992)]:
        assert crc16_bitwise(bytes.fromhex(payload)) == crc
    assert crc16_bitwise(b"\x42") == 0x8976
