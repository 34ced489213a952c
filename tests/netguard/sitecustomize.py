"""A socket guard for tests: with this folder on PYTHONPATH, every Python process (dvc, the stages,
the tools they start) records each attempt to reach another machine -- a DNS lookup of a remote
name or a connect/send to a non-loopback address -- to $SLMAKE_NETGUARD_LOG and refuses it.
Loopback and Unix sockets are allowed. Uses audit hooks (PEP 578), so it sees every socket call
made through Python, in every thread."""

import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("SLMAKE_NETGUARD_LOG")
_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False  # a name: resolving it is a lookup on the network
    return ip.is_loopback or ip.is_unspecified


def _hook(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                 "socket.gethostbyaddr"):
        host = args[0]
    elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[-1]
        if getattr(sock, "family", None) == socket.AF_UNIX or not isinstance(address, tuple):
            return
        host = address[0]
    else:
        return
    if _local(host):
        return
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {os.path.basename(sys.argv[0]) if sys.argv else '?'} {event} {host!r}\n")
    raise OSError(f"slmake netguard: {event} to {host!r} refused (tests run offline)")


if _LOG:
    sys.addaudithook(_hook)
