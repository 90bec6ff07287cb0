"""Loaded by every Python process a test starts with this folder on PYTHONPATH: records (and
refuses) any attempt to reach a host other than loopback, in the file named by
EPIFLOW_TEST_NET_LOG. Cohorts are patient data: nothing may leave the machine at run time."""
import os
import sys

_LOG = os.environ.get("EPIFLOW_TEST_NET_LOG")
_LOCAL = ("127.", "::1", "localhost", "/")


def _hook(event, args):
    if event not in ("socket.connect", "socket.getaddrinfo"):
        return
    addr = args[1] if event == "socket.connect" else (args[0], args[1])
    host = addr[0] if isinstance(addr, tuple) else addr
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or host == "" or host.startswith(_LOCAL):
        return
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {' '.join(sys.argv)[:200]} -> {addr}\n")
    raise ConnectionRefusedError(f"network access refused in tests: {addr}")


if _LOG:
    sys.addaudithook(_hook)
