"""Wire codecs: line and frame splitting, and a profile-driven stimulator message codec.

Decoders take arbitrary bytes. Anything that is not a well-formed message is counted as malformed
and skipped; nothing here raises on input. Splitting works on whole buffers (`bytes.find`,
`split`, one regex per line), not byte by byte in Python.
"""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from needlelab.events import StimSettings
from needlelab.profiles import (
    FieldRule,
    FrameFraming,
    LineFraming,
    Message,
    Query,
    StimulatorProfile,
)


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection): 0x29B1 for b"123456789"."""
    return binascii.crc_hqx(data, 0xFFFF)


class LineCodec:
    """Messages as text lines ending in `line_ending`; over-long lines are dropped as malformed."""

    def __init__(self, framing: LineFraming) -> None:
        self.ending = framing.line_ending.encode()
        self.max_bytes = framing.max_line_bytes
        self._buf = b""
        self._overflow = False  # inside an over-long line: drop until its end
        self.unit_ends: list[int] = []  # per unit of the last feed: where it ended in its data

    def encode(self, payload: bytes) -> bytes:
        """One message on the wire."""
        return payload + self.ending

    def reset(self) -> None:
        """Forget a partial message (after a reconnect)."""
        self._buf, self._overflow = b"", False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; returns (complete non-empty lines, malformed count)."""
        return _good_and_bad(self.feed_units(data))

    def feed_units(self, data: bytes) -> list[bytes | None]:
        """Add bytes; returns complete non-empty lines in wire order, None for a malformed one.
        `unit_ends` then says, for each, the offset in `data` just past its last byte."""
        end = -len(self._buf)  # offsets in `data`; the kept partial line came before it
        parts = (self._buf + data).split(self.ending)
        self._buf = parts.pop()
        units: list[bytes | None] = []
        ends: list[int] = []
        for part in parts:
            end += len(part) + len(self.ending)
            if self._overflow:  # the end of a line already counted as malformed
                self._overflow = False
                continue
            part = part.strip(b"\r")
            if not part:
                continue
            units.append(None if len(part) > self.max_bytes else part)
            ends.append(end)
        if len(self._buf) > self.max_bytes:
            if not self._overflow:
                units.append(None)
                ends.append(len(data))
            self._buf, self._overflow = b"", True
        self.unit_ends = ends
        return units


class FrameCodec:
    """Binary frames: `start | stuffed(payload + CRC16 big-endian) | stop`.

    Bytes equal to start, stop or escape inside a frame are sent as `escape, byte ^ escape_xor`,
    so a raw start or stop byte only ever marks a frame boundary and the decoder can resync on
    the next start byte. What counts as one malformed message (each counted once):
    - a run of bytes outside frames (between a stop byte, or the beginning, and the next start);
    - a frame cut short by the next start byte;
    - a frame with a bad CRC, a dangling escape, fewer than 3 bytes, or longer than
      `max_packet_bytes` on the wire (including one still open when it grows past that: the rest
      of it, up to the next start byte, is skipped without another count).
    """

    def __init__(self, framing: FrameFraming) -> None:
        self.f = framing
        self.max_bytes = framing.max_packet_bytes
        self._start = bytes([framing.start])
        self._stop = bytes([framing.stop])
        self._escape = bytes([framing.escape])
        specials = re.escape(bytes([framing.start, framing.stop, framing.escape]))
        self._stuff_re = re.compile(b"[" + specials + b"]")
        self._unstuff_re = re.compile(re.escape(self._escape) + b"(.)", re.S)
        self._buf = b""
        self._skipping = False  # inside an over-long frame already counted: drop to next start
        self.unit_ends: list[int] = []  # per unit of the last feed: where it ended in its data

    def encode(self, payload: bytes) -> bytes:
        """One message on the wire (payload = message id + data)."""
        body = payload + struct.pack(">H", crc16_ccitt_false(payload))
        x = self.f.escape_xor
        stuffed = self._stuff_re.sub(lambda m: bytes([self.f.escape, m[0][0] ^ x]), body)
        return self._start + stuffed + self._stop

    def reset(self) -> None:
        """Forget a partial frame (after a reconnect)."""
        self._buf, self._skipping = b"", False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; returns (payloads of valid frames, malformed count)."""
        return _good_and_bad(self.feed_units(data))

    def feed_units(self, data: bytes) -> list[bytes | None]:
        """Add bytes; returns valid frames' payloads in wire order, None for a malformed one.
        `unit_ends` then says, for each, the offset in `data` just past its last byte."""
        kept = len(self._buf)  # the partial frame kept from the last feed came before `data`
        buf = self._buf + data
        units: list[bytes | None] = []
        ends: list[int] = []  # in `data`, clamped: a unit can only be found once its bytes came

        def found(unit: bytes | None, end_in_buf: int) -> None:
            units.append(unit)
            ends.append(min(max(end_in_buf - kept, 0), len(data)))

        pos = 0
        while True:
            start = buf.find(self._start, pos)
            if start < 0:
                if pos < len(buf) and not self._skipping:
                    found(None, len(buf))  # a run of bytes outside any frame
                    # Keep counting the run as one, even if it continues in the next read.
                    self._skipping = True
                buf, pos = b"", 0
                break
            if start > pos and not self._skipping:
                found(None, start)
            self._skipping = False
            # Only look as far as the longest legal frame: finds stay cheap on garbage.
            window_end = start + self.max_bytes
            stop = buf.find(self._stop, start + 1, window_end)
            nxt = buf.find(self._start, start + 1, window_end)
            if nxt >= 0 and (stop < 0 or nxt < stop):
                found(None, nxt)  # cut short: a new frame starts before this one stopped
                pos = nxt
                continue
            if stop < 0:
                if len(buf) - start < self.max_bytes:
                    buf, pos = buf[start:], 0  # incomplete: wait for more bytes
                    break
                found(None, window_end)  # over-long: count once, skip the rest to next start
                self._skipping = True
                pos = window_end
                continue
            found(self._unstuff(buf[start + 1 : stop]), stop + 1)  # None: bad CRC or escape
            pos = stop + 1
        self._buf = buf[pos:] if pos else buf
        self.unit_ends = ends
        return units

    def _unstuff(self, body: bytes) -> bytes | None:
        # A frame ending in an escape that is not itself escaped has lost its last byte.
        if (len(body) - len(body.rstrip(self._escape))) % 2:
            return None
        x = self.f.escape_xor
        raw = self._unstuff_re.sub(lambda m: bytes([m[1][0] ^ x]), body)
        if len(raw) < 3 or struct.unpack(">H", raw[-2:])[0] != crc16_ccitt_false(raw[:-2]):
            return None
        return raw[:-2]


def _good_and_bad(units: list[bytes | None]) -> tuple[list[bytes], int]:
    good = [u for u in units if u is not None]
    return good, len(units) - len(good)


def wire_read_error(framing: LineFraming | FrameFraming, data: bytes) -> str | None:
    """Why `data` is not exactly one read of its protocol family on the wire; None if it is.

    Decodes the bytes themselves, strictly and apart from the stream codecs: one line with its
    ending and nothing else, or one frame (start, stuffing that only ever escapes a special byte,
    a matching CRC, stop) and nothing else; then the family's read form (`LineFraming.read_error`,
    `FrameFraming.read_error`) on what it carries.
    """
    if isinstance(framing, LineFraming):
        ending = framing.line_ending.encode()
        payload = data.removesuffix(ending)
        if len(payload) == len(data):
            return "no line ending"
        if b"\r" in payload or b"\n" in payload:
            return "more than one line"
        if len(payload) > framing.max_line_bytes:
            return "longer than max_line_bytes"
        return framing.read_error(payload)
    if len(data) < 5 or data[0] != framing.start or data[-1] != framing.stop:
        return "not one frame (start byte, at least id and CRC, stop byte)"
    if len(data) > framing.max_packet_bytes:
        return "longer than max_packet_bytes"
    specials = (framing.start, framing.stop, framing.escape)
    raw = bytearray()
    body = iter(data[1:-1])
    for byte in body:
        if byte in (framing.start, framing.stop):
            return "more than one frame"
        if byte == framing.escape:
            escaped = next(body, None)
            if escaped is None or escaped ^ framing.escape_xor not in specials:
                return "a bad escape"
            byte = escaped ^ framing.escape_xor
        raw.append(byte)
    if len(raw) < 3 or int.from_bytes(raw[-2:], "big") != crc16_ccitt_false(bytes(raw[:-2])):
        return "a bad CRC"
    return framing.read_error(bytes(raw[:-2]))


@dataclass(frozen=True)
class Decoded:
    """A message decoded from the wire: which profile message, and its typed fields."""

    message: str
    kind: str
    fields: dict[str, Any]
    # Where the message ended in the bytes it was decoded from: a fact of the read, not of the
    # message, so two equal messages compare equal wherever they ended.
    wire_end: int = field(default=0, compare=False)

    def settings(self) -> StimSettings:
        """The fields as stimulator settings (kind "settings" only)."""
        return StimSettings.model_validate(self.fields)


class StimProtocol:
    """A stimulator profile's protocol: encodes queries and messages, decodes the byte stream."""

    def __init__(self, profile: StimulatorProfile) -> None:
        self.profile = profile
        framing = profile.transport.framing
        self.codec: LineCodec | FrameCodec = (
            LineCodec(framing) if isinstance(framing, LineFraming) else FrameCodec(framing)
        )
        self.is_line = isinstance(framing, LineFraming)
        self.encoding = framing.encoding if isinstance(framing, LineFraming) else "ascii"
        self._line_res = [(m, re.compile(m.match)) for m in profile.messages if m.match]
        self._by_id = {m.id: m for m in profile.messages if m.id is not None}
        self._in_sync = True  # the last unit decoded was a valid message (or none yet)
        self._resyncs = 0  # runs of malformed units begun, not yet taken

    # -- host side -------------------------------------------------------------------------------
    def encode_query(self, query: Query, channel: int = 1) -> bytes:
        """The exact bytes of a query on the wire."""
        text = query.text(channel)
        return self.codec.encode(
            text.encode(self.encoding) if self.is_line else bytes.fromhex(text)
        )

    def decode(self, data: bytes) -> tuple[list[Decoded], int]:
        """Feed bytes; returns (decoded messages, malformed count). Each message says where it
        ended in `data` (`wire_end`); the resyncs they began are kept for `take_resyncs`."""
        out = []
        malformed = 0
        units = self.codec.feed_units(data)
        for unit, end in zip(units, self.codec.unit_ends, strict=True):
            decoded = None
            if unit is not None:
                decoded = self._decode_line(unit) if self.is_line else self._decode_frame(unit)
            if decoded is None:
                malformed += 1
                self._resyncs += self._in_sync
                self._in_sync = False
            else:
                self._in_sync = True
                out.append(replace(decoded, wire_end=end))
        return out, malformed

    def take_resyncs(self) -> int:
        """How many times, since the last call, the decoder lost the framing and had to find it
        again: each run of malformed units (bytes outside frames, a frame cut short by a start
        byte, a bad CRC, an over-long or undecodable line) between valid messages counts once,
        however many reads it spans."""
        n, self._resyncs = self._resyncs, 0
        return n

    def _decode_line(self, line: bytes) -> Decoded | None:
        try:
            text = line.decode(self.encoding)
        except UnicodeDecodeError:
            return None
        for message, regex in self._line_res:
            m = regex.fullmatch(text)
            if m:
                return self._convert(message, m.groupdict())
        return None

    def _decode_frame(self, payload: bytes) -> Decoded | None:
        message = self._by_id.get(payload[0])
        if message is None or message.layout is None:
            return None
        try:
            values = struct.unpack(message.layout, payload[1:])
        except struct.error:
            return None
        return self._convert(message, dict(zip(message.wire_fields, values, strict=True)))

    @staticmethod
    def _convert(message: Message, raw: dict[str, Any]) -> Decoded | None:
        try:
            fields = {name: rule.convert(raw.get(name)) for name, rule in message.fields.items()}
            if message.kind == "settings":
                StimSettings.model_validate(fields)  # out-of-range values are malformed
        # OverflowError: round(inf) from a profile whose regex admits "inf" or a float layout.
        except (KeyError, ValueError, TypeError, OverflowError, ValidationError):
            return None
        return Decoded(message.name, message.kind, fields)

    # -- device side (simulators) ----------------------------------------------------------------
    def match_query(self, payload: bytes, channels: list[int]) -> tuple[Query, int] | None:
        """Which query (and channel) a received message is, if any."""
        for query in self.profile.queries:
            for ch in channels if query.per_channel else [channels[0]]:
                if self.encode_query(query, ch) == self.codec.encode(payload):
                    return query, ch
        return None

    def encode_message(self, name: str, fields: dict[str, Any]) -> bytes:
        """A device message on the wire from typed fields (inverse of the profile's rules)."""
        message = next(m for m in self.profile.messages if m.name == name)
        # Binary layouts hold integers (scaled units); text formats take the number as it is.
        wire = message.wire_fields
        raw = {k: _invert(message.fields[k], fields[k], not self.is_line) for k in wire}
        if self.is_line:
            if message.format is None:
                raise ValueError(f"message {name!r} has no 'format': a simulator cannot send it")
            return self.codec.encode(message.format.format(**raw).encode(self.encoding))
        assert message.id is not None and message.layout is not None  # checked by the profile
        data = struct.pack(message.layout, *(raw[k] for k in wire))
        return self.codec.encode(bytes([message.id]) + data)


def _invert(rule: FieldRule, value: Any, integer: bool) -> Any:
    """The raw wire value of a typed field (the inverse of `FieldRule.convert`)."""
    if rule.type == "enum":
        inverse = {v: k for k, v in rule.map.items()}
        key = inverse[value]
        return int(key) if key.lstrip("-").isdigit() else key
    if rule.type == "bool":
        text = rule.true[0] if value else rule.false[0]
        return int(text) if integer else text
    if rule.type == "str":
        return value.encode() if integer else value
    raw = (float(value) - rule.offset) / rule.scale
    return round(raw) if integer or rule.type == "int" else raw
