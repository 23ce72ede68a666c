"""Wire codecs: line and frame splitting, and a profile-driven stimulator message codec.

Decoders take arbitrary bytes. Anything that is not a well-formed message is counted as malformed
and skipped; nothing here raises on input. Splitting works on whole buffers (`bytes.find`,
`split`, one regex per line), not byte by byte in Python.
"""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from needlelab.events import StimSettings
from needlelab.profiles import FrameFraming, LineFraming, Message, Query, StimulatorProfile


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

    def encode(self, payload: bytes) -> bytes:
        """One message on the wire."""
        return payload + self.ending

    def reset(self) -> None:
        """Forget a partial message (after a reconnect)."""
        self._buf, self._overflow = b"", False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; returns (complete non-empty lines, malformed count)."""
        parts = (self._buf + data).split(self.ending)
        self._buf = parts.pop()
        malformed = 0
        lines = []
        for part in parts:
            if self._overflow:  # the end of a line already counted as malformed
                self._overflow = False
                continue
            part = part.strip(b"\r")
            if not part:
                continue
            if len(part) > self.max_bytes:
                malformed += 1
            else:
                lines.append(part)
        if len(self._buf) > self.max_bytes:
            if not self._overflow:
                malformed += 1
            self._buf, self._overflow = b"", True
        return lines, malformed


class FrameCodec:
    """Binary frames: `start | stuffed(payload + CRC16 big-endian) | stop`.

    Bytes equal to start, stop or escape inside a frame are sent as `escape, byte ^ escape_xor`.
    A frame with a bad CRC, a dangling escape, or no payload is malformed; so is each run of
    bytes outside frames, and a frame cut short by the next start byte.
    """

    def __init__(self, framing: FrameFraming) -> None:
        self.f = framing
        self._start = bytes([framing.start])
        self._stop = bytes([framing.stop])
        specials = re.escape(bytes([framing.start, framing.stop, framing.escape]))
        self._stuff_re = re.compile(b"[" + specials + b"]")
        self._unstuff_re = re.compile(re.escape(bytes([framing.escape])) + b"(.)", re.S)
        self._buf = b""

    def encode(self, payload: bytes) -> bytes:
        """One message on the wire (payload = message id + data)."""
        body = payload + struct.pack(">H", crc16_ccitt_false(payload))
        x = self.f.escape_xor
        stuffed = self._stuff_re.sub(lambda m: bytes([self.f.escape, m[0][0] ^ x]), body)
        return self._start + stuffed + self._stop

    def reset(self) -> None:
        """Forget a partial frame (after a reconnect)."""
        self._buf = b""

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; returns (payloads of valid frames, malformed count)."""
        buf = self._buf + data
        payloads: list[bytes] = []
        malformed = 0
        pos = 0
        while True:
            start = buf.find(self._start, pos)
            if start < 0:
                if pos < len(buf):
                    malformed += 1  # a run of bytes outside any frame
                buf, pos = b"", 0
                break
            if start > pos:
                malformed += 1
            stop = buf.find(self._stop, start + 1)
            nxt = buf.find(self._start, start + 1)
            if 0 <= nxt < stop or (stop < 0 and nxt >= 0):
                malformed += 1  # cut short: a new frame starts before this one stopped
                pos = nxt
                continue
            if stop < 0:
                buf, pos = buf[start:], 0
                if len(buf) > 2 * self.f.max_packet_bytes:
                    malformed += 1
                    buf = b""
                break
            payload = self._unstuff(buf[start + 1 : stop])
            if payload is None:
                malformed += 1
            else:
                payloads.append(payload)
            pos = stop + 1
        self._buf = buf[pos:] if pos else buf
        return payloads, malformed

    def _unstuff(self, body: bytes) -> bytes | None:
        if body.endswith(bytes([self.f.escape])) and not body.endswith(bytes([self.f.escape]) * 2):
            return None
        x = self.f.escape_xor
        raw = self._unstuff_re.sub(lambda m: bytes([m[1][0] ^ x]), body)
        if len(raw) < 3 or struct.unpack(">H", raw[-2:])[0] != crc16_ccitt_false(raw[:-2]):
            return None
        return raw[:-2]


@dataclass(frozen=True)
class Decoded:
    """A message decoded from the wire: which profile message, and its typed fields."""

    message: str
    kind: str
    fields: dict[str, Any]

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

    # -- host side -------------------------------------------------------------------------------
    def encode_query(self, query: Query, channel: int = 1) -> bytes:
        """The exact bytes of a query on the wire."""
        if self.is_line:
            return self.codec.encode(query.send.format(channel=channel).encode(self.encoding))
        return self.codec.encode(bytes.fromhex(query.send.format(channel=channel)))

    def decode(self, data: bytes) -> tuple[list[Decoded], int]:
        """Feed bytes; returns (decoded messages, malformed count)."""
        units, malformed = self.codec.feed(data)
        out = []
        for unit in units:
            decoded = self._decode_line(unit) if self.is_line else self._decode_frame(unit)
            if decoded is None:
                malformed += 1
            else:
                out.append(decoded)
        return out, malformed

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
        return self._convert(message, dict(zip(message.fields, values, strict=True)))

    @staticmethod
    def _convert(message: Message, raw: dict[str, Any]) -> Decoded | None:
        try:
            fields = {name: rule.convert(raw[name]) for name, rule in message.fields.items()}
            if message.kind == "settings":
                StimSettings.model_validate(fields)  # out-of-range values are malformed
        except (KeyError, ValueError, ValidationError):
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
        raw = {k: _invert(rule, fields[k], not self.is_line) for k, rule in message.fields.items()}
        if self.is_line:
            assert message.format is not None, f"message {name} has no format for simulators"
            return self.codec.encode(message.format.format(**raw).encode(self.encoding))
        assert message.id is not None and message.layout is not None
        data = struct.pack(message.layout, *(raw[k] for k in message.fields))
        return self.codec.encode(bytes([message.id]) + data)


def _invert(rule: Any, value: Any, integer: bool) -> Any:
    if rule.type == "enum":
        inverse = {v: k for k, v in rule.map.items()}
        key = inverse[value]
        return int(key) if key.lstrip("-").isdigit() else key
    if rule.type == "bool":
        return 1 if value else 0
    if rule.type == "str":
        return value.encode() if integer else value
    raw = (float(value) - rule.offset) / rule.scale
    return round(raw) if integer or rule.type == "int" else raw
