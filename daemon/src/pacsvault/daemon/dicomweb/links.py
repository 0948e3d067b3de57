"""The address people reach the web door at: the base of the share links ``share create`` prints."""

from __future__ import annotations

import ipaddress
import socket

from pacsvault.daemon.config import Config


def web_root(config: Config, port: int) -> str:
    """``web.public_url`` when set; else http(s)://HOST:PORT of the listener (the machine's
    name when it listens on every address); '' when the door is off."""
    web = config.web
    if not web.enabled:
        return ""
    if web.public_url:
        return web.public_url.rstrip("/")
    host = web.listen.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = socket.getfqdn()
    elif address is not None and address.version == 6:
        host = f"[{host}]"
    scheme = "https" if config.security.tls else "http"
    return f"{scheme}://{host}:{port or web.listen.rpartition(':')[2]}"


def share_link(root: str, token: str) -> str:
    return f"{root}/share/{token}" if root else ""
