"""Where a server listens: this machine's own addresses, and the listening sockets of a port."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from pathlib import Path

SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
LISTEN = "0A"  # /proc/net/tcp's state of a listening socket


def own_addresses() -> list[str]:
    """This machine's own addresses other than loopback: each interface's IPv4 address and its
    global IPv6 addresses (never another machine's)."""
    found = []
    for _, name in socket.if_nameindex():
        request = struct.pack("256s", name.encode()[:15])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                reply = fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
        found.append(socket.inet_ntoa(reply[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            address, _, _, scope, *_ = line.split()
            if scope == "00":  # global: not link-local, not loopback
                found.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(address)))
    return [a for a in found if not a.startswith("127.") and a != "::1"]


def _address(hex_address: str) -> str:
    """/proc/net/tcp's address: 32-bit words in the machine's byte order."""
    raw = bytes.fromhex(hex_address)
    native = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if native.startswith(bytes(10) + b"\xff\xff"):  # an IPv4 address on an IPv6 socket
        native = native[12:]
    if len(native) == 4:
        return socket.inet_ntop(socket.AF_INET, native)
    return socket.inet_ntop(socket.AF_INET6, native)


def listening_hosts(port: int) -> set[str]:
    """The addresses TCP sockets listen on at `port` ("0.0.0.0" and "::" are every interface)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == LISTEN and int(hex_port, 16) == port:
                    hosts.add(_address(address))
    return hosts


def answers(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (only ever this machine's addresses)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
