"""BLE sensor decoding: exact values, counter wraparound, malformed frames, fuzzing of the EMG and
caliper decoders and of frame numbering."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from needlelab.devices.ble_sensor import decode_caliper
from needlelab.devices.emg_codecs import EmgDecoder, encode_ref_frames, unwrap
from needlelab.devices.frame_index import FrameIndexer
from needlelab.profiles import EmgFrame, load_emg_profile

REF = load_emg_profile("needlelab-emg-ref").frame
MYO = EmgFrame(format="myo-raw", channels=8, rate_hz=200, samples_per_frame=2)
ASCII = EmgFrame(format="ascii-value", channels=1, rate_hz=500)


def test_reference_frame_decodes_exactly() -> None:
    # Hand-built: seq 65535, t 4294967290 us, 10 samples x 8 channels of (sample*8 + ch) counts.
    counts = np.arange(80, dtype=np.int16).reshape(10, 8)
    payload = struct.pack("<HIBB", 65535, 4294967290, 10, 8) + counts.tobytes()
    assert len(payload) == 168
    batch = EmgDecoder(REF).decode([payload])
    assert batch.malformed == 0 and batch.good.tolist() == [0]
    assert batch.counter.tolist() == [65535] and batch.device_t_us.tolist() == [4294967290]
    assert np.array_equal(batch.values, counts.astype(np.float32) * 0.5)
    assert encode_ref_frames(REF, np.array([65535]), np.array([4294967290]), counts[None]) == [
        payload
    ]


def test_counter_and_clock_wraparound() -> None:
    assert unwrap(np.array([65534, 65535, 0, 1]), 16, None).tolist() == [65534, 65535, 65536, 65537]
    assert unwrap(np.array([2, 5]), 16, 65537).tolist() == [65538, 65541]  # 3 frames lost
    assert unwrap(np.array([10]), 32, 2**32 - 5).tolist() == [2**32 + 10]
    frames = encode_ref_frames(
        REF, np.arange(65530, 65545), np.arange(15) * 5000, np.zeros((15, 10, 8), np.int16)
    )
    batch = EmgDecoder(REF).decode(frames)
    assert unwrap(batch.counter, 16, None).tolist() == list(range(65530, 65545))


def test_malformed_frames_are_counted_and_dropped() -> None:
    good = encode_ref_frames(
        REF, np.array([1, 2]), np.array([0, 5000]), np.ones((2, 10, 8), np.int16)
    )
    wrong_header = bytearray(good[0])
    wrong_header[6] = 9  # says 9 samples in a 10-sample frame
    batch = EmgDecoder(REF).decode([good[0], b"", good[1][:-1], bytes(wrong_header), good[1]])
    assert batch.good.tolist() == [0, 4] and batch.malformed == 3
    assert batch.values.shape == (20, 8)


def test_myo_and_ascii_formats() -> None:
    raw = bytes(range(-8 & 0xFF, 256)) + bytes(range(8))  # 16 bytes
    batch = EmgDecoder(MYO).decode([raw[:16], b"short"])
    assert batch.values.shape == (2, 8) and batch.malformed == 1
    assert batch.values[0, 0] == -8.0
    batch = EmgDecoder(ASCII).decode([b"512.5", b"0.0", b"x1", b"\xff"])
    assert batch.values[:, 0].tolist() == [512.5, 0.0] and batch.malformed == 2


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_no_notification_bytes_make_a_decoder_raise(payloads: list[bytes]) -> None:
    for frame in (REF, MYO, ASCII):
        batch = EmgDecoder(frame).decode(payloads)
        assert len(batch.good) + batch.malformed == len(payloads)
        assert batch.values.shape[0] == len(batch.good) * frame.samples_per_frame


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_no_caliper_notification_bytes_make_its_decoder_raise(payloads: list[bytes]) -> None:
    for fmt in ("sylvac-simple", "needlelab-caliper"):
        good, readings, malformed = decode_caliper(fmt, 1e-4, payloads)
        assert len(good) + malformed == len(payloads) and readings.shape == (len(good), 2)
        assert np.isfinite(readings).all()


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**9)), max_size=60),
    st.sampled_from([(1, False), (4, True), (1 << 16, False)]),
)
def test_frame_numbers_never_go_back_whatever_arrives(
    frames: list[tuple[int, int]], counter: tuple[int, bool]
) -> None:
    modulus, turns = counter
    raw = np.array([r for r, _ in frames], dtype=np.int64)
    t = np.cumsum([dt for _, dt in frames]).astype(np.int64)  # arrivals are in order
    out = FrameIndexer(10e6, modulus, turns).number(raw if modulus > 1 else None, t)
    assert len(out.frame) == len(frames) and (out.inferred_lost >= 0).all()
    assert (np.diff(out.frame) >= (1 if turns or modulus == 1 else 0)).all()
