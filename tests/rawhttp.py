"""HTTP/1.1 on a raw socket, for what a client library will not send: partial heads and bodies,
pipelining, connections that never read."""

from __future__ import annotations

import json
import select
import socket


def connect(port: int, timeout: float = 20) -> socket.socket:
    """A TCP connection to the server on loopback."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def send_until_the_server_stops_reading(sock: socket.socket, data: bytes) -> int:
    """Bytes of `data` the server took before it stopped reading (it never answers being read)."""
    sock.setblocking(False)
    sent = 0
    while sent < len(data):
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            poller = select.poll()  # not select(): the suite's process may hold descriptors past 1024
            poller.register(sock, select.POLLOUT)
            if not poller.poll(1000):  # a second without room: nothing more is read
                break
    return sent


class Connection:
    """One connection that reads the server's answers back one by one."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole response (Content-Length framed, as this server answers)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def answer(self) -> tuple[int, object]:
        """The next response's status and JSON body."""
        status, _, body = self.response()
        return status, json.loads(body)

    def head(self) -> bytes:
        """The next message when it has no body (an interim 100 Continue, an answer to HEAD)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()
