"""Upstream bodies to Python values: Content-Encoding under a byte cap, then JSON.

Every way a body can fail to decode ends here as a classified error with a message
(`MalformedResponse`, `ResponseTooLarge`, `EgressRefused` for an encoding we never
asked for), so no zlib or JSON exception ever reaches a caller. Bytes are counted after
decoding, while streaming: a gzip bomb stops at the cap, not after inflating.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from .errors import EgressRefused, MalformedResponse, Reason, ResponseTooLarge

__all__ = ["ACCEPT_ENCODING", "BodyDecoder", "decode_json"]

#: what the client advertises; anything else in Content-Encoding is refused
ACCEPT_ENCODING = "gzip, deflate"
_IDENTITY = frozenset({"identity", ""})
_GZIP = frozenset({"gzip", "x-gzip"})


class BodyDecoder:
    """Decodes one response body chunk by chunk and refuses to grow past `cap` bytes.

    gzip/deflate go through zlib with `max_length`, so at most `cap + 1` bytes are ever
    inflated; a stream that ends early (truncated), bad compressed data and bytes after
    the end of a deflate stream are `MalformedResponse`. Concatenated gzip members (legal,
    rare) are all decoded rather than silently cut after the first.
    """

    def __init__(self, content_encoding: str | None, cap: int) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding not in _IDENTITY | _GZIP | {"deflate"}:
            raise EgressRefused(Reason.UNSUPPORTED_CONTENT_ENCODING,
                                f"content-encoding {encoding!r} is not accepted")
        self.encoding = "identity" if encoding in _IDENTITY else encoding
        self.cap = cap
        self.size = 0
        self._received = False
        self._zlib = self._inflater() if self.encoding != "identity" else None

    def _inflater(self, *, raw_deflate: bool = False) -> Any:
        if self.encoding in _GZIP:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)

    def check_declared_length(self, content_length: str | None) -> None:
        """Refuse before reading when an unencoded body declares more than the cap."""
        length = (content_length or "").strip()
        if self.encoding == "identity" and length.isdigit() and int(length) > self.cap:
            raise ResponseTooLarge(f"response declares {length} bytes, over "
                                   f"transport.maxPayloadBytes ({self.cap})")

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes of the next raw chunk."""
        if not data:
            return b""
        out = data if self._zlib is None else self._inflate(data)
        self._received = True
        self._count(len(out))
        return out

    def finish(self) -> None:
        """Called after the last chunk: a compressed stream must have reached its end."""
        if self._zlib is not None and self._received and not self._zlib.eof:
            raise MalformedResponse(f"{self.encoding} body ends before its compressed stream "
                                    "does (truncated)")

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.cap:
            raise _too_large()

    def _inflate(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            if self._zlib.eof:
                if self.encoding not in _GZIP:
                    raise MalformedResponse("data after the end of the deflate stream")
                self._zlib = self._inflater()  # the next gzip member
            room = self.cap - self.size - len(out)
            try:
                out += self._zlib.decompress(data, room + 1)
            except zlib.error as exc:
                if not (self.encoding == "deflate" and not self._received and not out):
                    raise MalformedResponse(f"invalid {self.encoding} body: {exc}") from None
                # Some servers send raw deflate without the zlib wrapper.
                self._zlib = self._inflater(raw_deflate=True)
                try:
                    out += self._zlib.decompress(data, room + 1)
                except zlib.error as raw_exc:
                    raise MalformedResponse(f"invalid deflate body: {raw_exc}") from None
            if len(out) > room:
                raise _too_large()
            # Input is left over only past the end of a stream (else max_length stopped it,
            # and the cap check above has raised).
            data = self._zlib.unused_data if self._zlib.eof else b""
        return bytes(out)


def _too_large() -> ResponseTooLarge:
    return ResponseTooLarge("response body exceeds transport.maxPayloadBytes "
                            "(counted after decoding)")


def decode_json(content: bytes, url: str) -> Any:
    """The JSON value of a response body; `MalformedResponse` names the parser's reason.

    orjson refuses bodies nested past 1,024 levels, numbers beyond a double's range and
    invalid UTF-8; its messages hold positions only, never the body's text.
    """
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"response from {url} is not valid JSON ({exc.msg} at byte "
                                f"{exc.pos}; {len(content)} bytes)") from None
