"""Line and frame codecs: hand-written vectors, and properties over arbitrary bytes (hypothesis).

The malformed count is only meaningful if it is well defined, so the generated garbage follows
the codecs' documented rules: an over-long line or frame is one malformed message, a frame cut
short by the next start byte is one, a run of bytes between frames is one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from needlelab.devices.codecs import FrameCodec, LineCodec, StimProtocol
from needlelab.events import StimSettings
from needlelab.profiles import FrameFraming, LineFraming, load_stim_profile

FRAMING = FrameFraming(type="frame", start=0xF0, stop=0x0F, escape=0x81, escape_xor=0x55)
LINES = LineFraming(type="line", line_ending="\n", max_line_bytes=128)

# Hand-written wire bytes (CRC-16/CCITT-FALSE computed with a bitwise reference, then pasted).
GET_ID = bytes.fromhex("f0 01 f1 d1 0f")
GET_STATUS_1 = bytes.fromhex("f0 10 01 0e 5d 0f")
# CHANGED ch2 2.0 Hz 250 µs 12.50 mA biphasic continuous on (the drivers/README.md example).
CHANGED_2 = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 01 7e a3 0f")
# STATUS ch1 2.0 Hz 161 µs 3.50 mA: its CRC 0x0F7E starts with the stop byte, so it is stuffed.
STATUS_1 = bytes.fromhex("f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f")
# ID "BRIDGE", serial 9, firmware 1.2.
IDENTITY = bytes.fromhex("f0 02 42 52 49 44 47 45 00 00 09 00 00 00 01 02 d5 ae 0f")

VALID_FRAMES = [GET_ID, GET_STATUS_1, CHANGED_2, STATUS_1, IDENTITY]
VALID_LINES = [
    b"NEEDLELAB,SIMSTIM,1,1.0\n",
    b"STAT CH1 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n",
    b"CHG CH2 F=100.0 PW=400 I=0.00 W=MONO M=BRST OUT=0\r\n",
]


def test_frame_vectors_decode_and_encode_exactly() -> None:
    protocol = StimProtocol(load_stim_profile("needlelab-stim-frame"))
    messages, malformed = protocol.decode(CHANGED_2 + STATUS_1 + IDENTITY)
    assert malformed == 0
    assert [m.message for m in messages] == ["change", "status", "identity"]
    assert messages[0].settings() == StimSettings(
        channel=2, frequency_hz=2.0, pulse_width_us=250, intensity_ma=12.5, output_on=True
    )
    assert messages[1].settings() == StimSettings(
        channel=1, frequency_hz=2.0, pulse_width_us=161, intensity_ma=3.5, output_on=True
    )
    assert messages[2].fields == {"model": "BRIDGE", "serial": 9, "fw_major": 1, "fw_minor": 2}
    assert protocol.encode_message("status", messages[1].fields) == STATUS_1
    assert protocol.encode_message("change", messages[0].fields) == CHANGED_2
    codec = FrameCodec(FRAMING)
    assert codec.encode(b"\x01") == GET_ID and codec.encode(b"\x10\x01") == GET_STATUS_1


def test_dangling_escapes_are_malformed_and_escaped_escapes_are_not() -> None:
    codec = FrameCodec(FRAMING)
    # Payload 12 81: the escape byte is data, sent as 81 d4.
    assert codec.encode(b"\x12\x81")[:4] == b"\xf0\x12\x81\xd4"
    assert codec.feed(codec.encode(b"\x12\x81")) == ([b"\x12\x81"], 0)
    assert codec.feed(b"\xf0\x12\x81\x0f") == ([], 1)  # the escape has lost its byte
    assert codec.feed(b"\xf0\x12\x81\x81\x81\x0f") == ([], 1)  # a pair, then a lone one


def test_an_over_long_frame_counts_once_however_it_is_read() -> None:
    junk = b"\xf0" + bytes(range(0x20, 0x20 + 100)) + b"\x0f"  # 102 bytes > 69
    for cut in (1, 30, 68, 69, 70, 101):
        codec = FrameCodec(FRAMING)
        got1, bad1 = codec.feed(junk[:cut])
        got2, bad2 = codec.feed(junk[cut:] + CHANGED_2)
        assert (got1 + got2, bad1 + bad2) == ([CHANGED_2[1:-3]], 1), cut
        assert codec._buf == b""


def test_a_run_between_frames_counts_once_across_reads() -> None:
    codec = FrameCodec(FRAMING)
    assert codec.feed(GET_ID + b"noise ") == ([b"\x01"], 1)
    assert codec.feed(b"more noise") == ([], 0)
    assert codec.feed(b"still" + GET_ID) == ([b"\x01"], 0)


def test_line_over_long_counts_once_however_it_is_read() -> None:
    line = b"x" * 300 + b"\n"
    for cut in (1, 128, 129, 200, 300):
        codec = LineCodec(LINES)
        got1, bad1 = codec.feed(line[:cut])
        got2, bad2 = codec.feed(line[cut:] + b"OK\n")
        assert (got1 + got2, bad1 + bad2) == ([b"OK"], 1), cut


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_arbitrary_bytes_never_raise_and_buffers_stay_bounded(chunks: list[bytes]) -> None:
    for profile in ("needlelab-stim-ascii", "needlelab-stim-frame"):
        protocol = StimProtocol(load_stim_profile(profile))
        for chunk in chunks:
            messages, malformed = protocol.decode(chunk)
            assert malformed >= 0
            for message in messages:
                if message.kind == "settings":
                    message.settings()
        limit = 128 if profile.endswith("ascii") else 69
        assert len(protocol.codec._buf) <= limit


def frame_garbage(rng: random.Random, kind: str) -> bytes:
    """One malformed frame-side message of `kind`, by construction."""
    banned = {0xF0, 0x0F}
    body = bytes(b for b in rng.randbytes(200) if b not in banned)
    if kind == "overlong":
        return b"\xf0" + body[:80].ljust(80, b"A") + b"\x0f"
    if kind == "truncated":  # no stop byte: the next start byte cuts it short
        return rng.choice(VALID_FRAMES)[: rng.randrange(1, 5)]
    if kind == "bad_crc":
        frame = bytearray(CHANGED_2)
        frame[3] ^= 0x01
        return bytes(frame)
    # a run of bytes between frames (no start byte in it)
    return bytes(b for b in body if b != 0xF0)[: rng.randrange(1, 50)] or b"x"


def feed_in_reads(
    feed: Callable[[bytes], tuple[list[Any], int]], wire: bytes, read_sizes: list[int]
) -> tuple[list[Any], int]:
    """Everything `feed` decodes from `wire` read in the given sizes, cycling (splits land
    anywhere), and its malformed count."""
    got: list[Any] = []
    counted, pos, i = 0, 0, 0
    while pos < len(wire):
        size = read_sizes[i % len(read_sizes)]
        decoded, malformed = feed(wire[pos : pos + size])
        got += decoded
        counted += malformed
        pos, i = pos + size, i + 1
    return got, counted


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(
    st.lists(st.sampled_from(["valid", "overlong", "truncated", "bad_crc", "run"]), max_size=40),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=20),
    st.integers(min_value=0, max_value=2**32),
)
def test_frames_survive_interleaved_garbage_with_an_exact_count(
    kinds: list[str], read_sizes: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    wire, expected, bad, previous = b"", [], 0, "valid"
    for kind in [*kinds, "valid"]:  # a final good frame ends any truncated one
        if kind == "run" and previous != "valid":
            continue  # a run after a cut or bad frame would merge with it: not one message
        if kind == "valid":
            frame = rng.choice(VALID_FRAMES)
            wire += frame
            expected.append(frame)
        else:
            wire += frame_garbage(rng, kind)
            bad += 1
        previous = kind
    got, counted = feed_in_reads(FrameCodec(FRAMING).feed, wire, read_sizes)
    assert got == [FrameCodec(FRAMING).feed(f)[0][0] for f in expected]
    assert counted == bad


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(
    st.lists(st.sampled_from(["valid", "overlong", "nomatch", "binary"]), max_size=40),
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=20),
    st.integers(min_value=0, max_value=2**32),
)
def test_lines_survive_interleaved_garbage_with_an_exact_count(
    kinds: list[str], read_sizes: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    protocol = StimProtocol(load_stim_profile("needlelab-stim-ascii"))
    clean = bytes(b for b in range(256) if b not in b"\r\n")
    wire, expected, bad = b"", [], 0
    for kind in kinds:
        if kind == "valid":
            line = rng.choice(VALID_LINES)
            wire += line
            expected.append(line.rstrip(b"\r\n"))
            continue
        if kind == "overlong":  # longer than max_line_bytes, whatever its content
            wire += bytes(rng.choice(clean) for _ in range(rng.randrange(129, 400))) + b"\n"
        elif kind == "nomatch":  # ASCII, short, matches no message
            wire += b"STAT CH1 F=" + str(rng.random()).encode() + b"\n"
        else:  # not ASCII: cannot decode
            wire += b"\xff" + bytes(rng.choice(clean) for _ in range(20)) + b"\n"
        bad += 1
    got, counted = feed_in_reads(protocol.decode, wire, read_sizes)
    assert len(got) == len(expected) and counted == bad
    reference = StimProtocol(load_stim_profile("needlelab-stim-ascii"))
    assert got == [reference.decode(line + b"\n")[0][0] for line in expected]


def test_a_megabyte_of_garbage_decodes_in_well_under_a_second() -> None:
    rng = random.Random(7)
    junk = rng.randbytes(1 << 20)
    for profile in ("needlelab-stim-ascii", "needlelab-stim-frame"):
        protocol = StimProtocol(load_stim_profile(profile))
        t0 = time.perf_counter()
        for i in range(0, len(junk), 4096):
            protocol.decode(junk[i : i + 4096])
        elapsed = time.perf_counter() - t0
        assert elapsed < 1.0, (profile, elapsed)


def test_each_unit_says_where_it_ended_in_its_read() -> None:
    """`unit_ends`: the offset in the bytes just fed past each unit's last byte (frames typed
    from drivers/README.md: STATUS 0x11 and CHANGED 0x12, 16 and 15 bytes on the wire)."""
    status = bytes.fromhex("f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f")
    changed = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 01 7e a3 0f")
    frames = FrameCodec(load_stim_profile("needlelab-stim-frame").transport.framing)
    assert len(frames.feed_units(status + changed)) == 2 and frames.unit_ends == [16, 31]
    units = frames.feed_units(b"\x00\x07" + status[:5])  # garbage, then half a frame
    assert units == [None] and frames.unit_ends == [2]
    assert len(frames.feed_units(status[5:] + changed)) == 2
    assert frames.unit_ends == [11, 26]  # the frame begun in the last read ends 11 bytes in
    lines = LineCodec(LineFraming(type="line", line_ending="\r\n"))
    assert lines.feed_units(b"STAT CH1\r\nSTAT") == [b"STAT CH1"] and lines.unit_ends == [10]
    assert lines.feed_units(b" CH2\r\n\r\nX\r\n") == [b"STAT CH2", b"X"]
    assert lines.unit_ends == [6, 11]  # the empty line between them is no unit
