"""Byte-exact stimulator protocol tests: hand-written wire vectors, not produced by the code."""

from __future__ import annotations

import pytest

from needlelab.devices.codecs import FrameCodec, LineCodec, StimProtocol, crc16_ccitt_false
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
