# SPDX-License-Identifier: GPL-3.0-or-later
"""A small WebSocket client (RFC 6455), enough to follow a ComfyUI server's progress messages.

Blender's Python has `requests` but no WebSocket library, and the extension should not ship one for a
receive-mostly connection: this reads text and binary messages, answers pings, and closes cleanly. Frames
from the server are never masked; frames we send always are (the RFC requires both).
"""

import base64
import hashlib
import os
import socket
import ssl
import struct
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # fixed by RFC 6455 for the handshake's accept key
_MAX_MESSAGE = 64 * 1024 * 1024  # a preview image is KBs; anything this large is not ComfyUI talking
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class WebSocketError(OSError):
    """The connection failed, was refused or broke; the message says how."""


class WebSocket:
    """One client connection. `receive(timeout)` returns `(opcode, payload)` of the next whole message
    (`TEXT` as str, `BINARY` as bytes), or None when nothing arrived within `timeout` seconds."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise WebSocketError(f"not a ws:// or wss:// address: {url!r}")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            raw = socket.create_connection((parts.hostname, port), timeout=timeout)
        except OSError as error:
            raise WebSocketError(f"cannot connect to {parts.hostname}:{port}: {error}") from error
        if parts.scheme == "wss":
            raw = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
        self._socket = raw
        self._buffer = b""
        self.closed = False
        key = base64.b64encode(os.urandom(16)).decode()
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        try:
            raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = self._read_until(b"\r\n\r\n", 64 * 1024)
        except OSError as error:
            self._socket.close()
            raise WebSocketError(f"WebSocket handshake with {host} failed: {error}") from error
        status, *fields = head.decode("latin-1").split("\r\n")
        found = {}
        for field in fields:
            name, _, value = field.partition(":")
            found[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if " 101 " not in f"{status} " or found.get("sec-websocket-accept") != accept:
            self._socket.close()
            raise WebSocketError(f"{host} refused the WebSocket upgrade: {status.strip() or 'no answer'}")

    # -- Messages -----------------------------------------------------------------------------------------

    def receive(self, timeout: float | None) -> tuple[int, str | bytes] | None:
        """The next whole message, None after `timeout` seconds without one (None: wait for ever).

        Raises:
            WebSocketError: the connection broke or the server closed it.
        """
        self._socket.settimeout(timeout)
        opcode, parts = None, []
        try:
            while True:
                if not self._buffer:
                    try:
                        self._fill(1)
                    except TimeoutError:
                        if opcode is None:
                            return None
                        raise
                self._socket.settimeout(max(timeout or 0.0, 10.0) if timeout is not None else None)
                final, kind, payload = self._frame()
                if kind == PING:
                    self._send(PONG, payload)
                    continue
                if kind == PONG:
                    continue
                if kind == CLOSE:
                    self.closed = True
                    raise WebSocketError("the server closed the WebSocket")
                if kind != CONTINUATION:
                    opcode = kind
                parts.append(payload)
                if final:
                    data = b"".join(parts)
                    return (TEXT, data.decode("utf-8")) if opcode == TEXT else (BINARY, data)
        except OSError as error:
            self.closed = True
            if isinstance(error, WebSocketError):
                raise
            raise WebSocketError(f"the WebSocket broke: {error}") from error

    def close(self) -> None:
        """Say goodbye (best effort) and close the socket."""
        if not self.closed:
            self.closed = True
            try:
                self._send(CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass
        self._socket.close()

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- Frames -------------------------------------------------------------------------------------------

    def _frame(self) -> tuple[bool, int, bytes]:
        self._fill(2)
        first, second = self._buffer[0], self._buffer[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            self._fill(4)
            (length,) = struct.unpack("!H", self._buffer[2:4])
            offset = 4
        elif length == 127:
            self._fill(10)
            (length,) = struct.unpack("!Q", self._buffer[2:10])
            offset = 10
        if length > _MAX_MESSAGE:
            raise WebSocketError(f"a WebSocket frame of {length} bytes is too large")
        mask = b""
        if second & 0x80:  # servers should not mask; accept it anyway
            self._fill(offset + 4)
            mask, offset = self._buffer[offset : offset + 4], offset + 4
        self._fill(offset + length)
        payload = self._buffer[offset : offset + length]
        self._buffer = self._buffer[offset + length :]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._socket.sendall(head + mask + masked)

    def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            chunk = self._socket.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise WebSocketError("the server closed the connection")
            self._buffer += chunk

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self._buffer:
            if len(self._buffer) > limit:
                raise WebSocketError("the handshake answer is too long")
            chunk = self._socket.recv(4096)
            if not chunk:
                raise WebSocketError("the server closed the connection during the handshake")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head
