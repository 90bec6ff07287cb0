"""Serving the viewer: bind a socket (a free port unless one is asked for), print the URL, open a
browser where one can be opened, and run uvicorn until interrupted."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import webbrowser

from pipelines.errors import EpiflowError

__all__ = ["bind", "is_loopback", "open_browser", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port chosen by the system)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EpiflowError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise EpiflowError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _can_open_browser() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False     # no graphical session: a console browser would take over the terminal
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def open_browser(url: str) -> bool:
    """Open url in the user's browser (in the background); False where there is none."""
    if not _can_open_browser():
        return False
    threading.Thread(target=lambda: _quiet_open(url), daemon=True).start()
    return True


def _quiet_open(url: str) -> None:
    try:
        webbrowser.open(url, new=2)
    except Exception:   # noqa: BLE001 - a browser that fails to start must not stop the server
        pass


def serve(app, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Run the ASGI app on an already bound socket until Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
