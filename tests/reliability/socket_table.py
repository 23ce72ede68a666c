"""This process's socket table, read the way proc(5) describes it, for the LSL exposure tests.

Written apart from needlelab's own reader (`needlelab.lsl.listening_sockets`), which is under
test. Importable on its own (no LSL import), so a child process can measure itself with it.

/proc/net/{tcp,tcp6,udp,udp6}: one row per socket of this network namespace; `local_address`
and `rem_address` are hex `ADDR:PORT`, ADDR printed as 32-bit words in the host's byte order;
`st` is the kernel's TCP state (0A is LISTEN); column 10 is the socket's inode, which matches
the `socket:[INODE]` links in /proc/self/fd (so only this process's sockets are kept).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import NamedTuple

TABLES = {"tcp": socket.AF_INET, "tcp6": socket.AF_INET6, "udp": socket.AF_INET,
          "udp6": socket.AF_INET6}  # fmt: skip


class Sock(NamedTuple):
    """One socket: table (tcp, tcp6, udp, udp6), local address and port, TCP state, peer port."""

    table: str
    address: str
    port: int
    state: int
    peer_port: int
    inode: int

    @property
    def protocol(self) -> str:
        """TCP or UDP, as needlelab names them."""
        return self.table[:3].upper()

    @property
    def listening(self) -> bool:
        """TCP in LISTEN, or UDP with no peer (takes datagrams from anyone)."""
        return self.state == 0x0A if self.table.startswith("tcp") else self.peer_port == 0


def _address(hexaddr: str, family: int) -> tuple[str, int]:
    host, port = hexaddr.split(":")
    words = [host[i : i + 8] for i in range(0, len(host), 8)]
    raw = b"".join(int(w, 16).to_bytes(4, sys.byteorder) for w in words)
    return socket.inet_ntop(family, raw), int(port, 16)


def own_inodes() -> set[int]:
    """Inodes of this process's sockets, from /proc/self/fd."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def own_sockets() -> list[Sock]:
    """Every TCP and UDP socket of this process."""
    mine = own_inodes()
    found = []
    for table, family in TABLES.items():
        try:
            with open(f"/proc/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            inode = int(cols[9])
            if inode not in mine:
                continue
            address, port = _address(cols[1], family)
            _, peer_port = _address(cols[2], family)
            found.append(Sock(table, address, port, int(cols[3], 16), peer_port, inode))
    return found


def listening() -> list[Sock]:
    """This process's listening sockets."""
    return [s for s in own_sockets() if s.listening]
