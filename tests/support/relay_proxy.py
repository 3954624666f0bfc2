"""A small forwarding proxy for tests: HTTP (CONNECT tunnels and plain forwarding of absolute-URI requests),
SOCKS5 and SOCKS4/4a on one loopback port, told apart by the first byte a client sends.

`hosts` maps names only this proxy knows to host:port (e.g. {"registry.proxied.invalid:80": "127.0.0.1:5000"},
or a name alone for any port), so a client can reach them only through it. `relayed` records every connection
relayed as (kind, target as the client named it): kind is "connect", "forward", "socks5" or "socks4". Python
stdlib and threads only; not imported by udocker.
"""

import select
import socket
import struct
import threading
from typing import Dict, List, Optional, Tuple


class RelayProxy:
    def __init__(self, hosts: Optional[Dict[str, str]] = None):
        self.hosts = {name.lower(): target for name, target in (hosts or {}).items()}
        self.relayed: List[Tuple[str, str]] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def count(self, kind: Optional[str] = None) -> int:
        with self.lock:
            return sum(1 for k, _ in self.relayed if kind in (None, k))

    def targets(self) -> List[str]:
        with self.lock:
            return [target for _, target in self.relayed]

    def start(self) -> "RelayProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()

    def __enter__(self) -> "RelayProxy":
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    # -- plumbing --------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _resolve(self, host: str, port: int) -> Tuple[str, int]:
        target = self.hosts.get(f"{host.lower()}:{port}") or self.hosts.get(host.lower())
        if target:
            name, _, number = target.rpartition(":")
            return name, int(number)
        return host, port

    def _open(self, kind: str, host: str, port: int) -> Optional[socket.socket]:
        try:
            upstream = socket.create_connection(self._resolve(host, port), timeout=10)
        except OSError:
            return None
        upstream.settimeout(None)
        with self.lock:
            self.relayed.append((kind, f"{host}:{port}"))
        return upstream

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            first = client.recv(1, socket.MSG_PEEK)
            if first == b"\x05":
                upstream = self._socks5(client)
            elif first == b"\x04":
                upstream = self._socks4(client)
            elif first:
                upstream = self._http(client)
            if upstream is not None:
                self._pipe(client, upstream)
        except (OSError, ValueError, struct.error):
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while not self.stopped.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.5)
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)

    @staticmethod
    def _exactly(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = sock.recv(size - len(data))
            if not more:
                raise ValueError("closed")
            data += more
        return data

    def _until(self, sock: socket.socket, end: bytes) -> bytes:
        data = b""
        while not data.endswith(end):
            data += self._exactly(sock, 1)
            if len(data) > 65536:
                raise ValueError("too long")
        return data

    # -- protocols -------------------------------------------------------------------------------------
    def _socks5(self, client: socket.socket) -> Optional[socket.socket]:
        _, methods = self._exactly(client, 2)
        self._exactly(client, methods)
        client.sendall(b"\x05\x00")  # no authentication
        _, command, _, kind = self._exactly(client, 4)
        if kind == 1:
            host = socket.inet_ntoa(self._exactly(client, 4))
        elif kind == 3:
            host = self._exactly(client, self._exactly(client, 1)[0]).decode("idna")
        else:
            host = socket.inet_ntop(socket.AF_INET6, self._exactly(client, 16))
        (port,) = struct.unpack("!H", self._exactly(client, 2))
        upstream = self._open("socks5", host, port) if command == 1 else None
        client.sendall(b"\x05" + (b"\x00" if upstream else b"\x05") + b"\x00\x01" + bytes(6))
        return upstream

    def _socks4(self, client: socket.socket) -> Optional[socket.socket]:
        _, command, port, address = struct.unpack("!BBH4s", self._exactly(client, 8))
        self._until(client, b"\x00")  # the user id
        host = socket.inet_ntoa(address)
        if address[:3] == b"\x00\x00\x00" and address[3]:  # SOCKS4a: the name follows
            host = self._until(client, b"\x00")[:-1].decode("idna")
        upstream = self._open("socks4", host, port) if command == 1 else None
        client.sendall(b"\x00" + (b"\x5a" if upstream else b"\x5b") + bytes(6))
        return upstream

    def _http(self, client: socket.socket) -> Optional[socket.socket]:
        head = self._until(client, b"\r\n\r\n").decode("latin-1")
        line, _, rest = head.partition("\r\n")
        method, target, version = line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = self._open("connect", host.strip("[]"), int(port))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n" if upstream else
                           b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return upstream
        # absolute-URI request: one request per connection, sent on in origin form
        scheme, _, remainder = target.partition("://")
        netloc, slash, path = remainder.partition("/")
        host, _, port = netloc.rpartition(":") if netloc.count(":") == 1 else (netloc, "", "")
        upstream = self._open("forward", host, int(port or 80)) if scheme == "http" else None
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None
        headers = [h for h in rest.split("\r\n") if h and not h.lower().startswith(("connection:", "proxy-"))]
        upstream.sendall(f"{method} {slash}{path} {version}\r\n".encode("latin-1")
                         + "".join(f"{h}\r\n" for h in headers + ["Connection: close"]).encode("latin-1")
                         + b"\r\n")
        return upstream
