"""Who may use the teach page: safe by default.

The page binds 127.0.0.1 unless told otherwise. It always has a token (given, or generated at
start and printed with the page's address): on a non-loopback bind every request needs it, on
loopback the page itself hands it to the browser that opens it. Requests that change anything
(teach, forget, vocabulary) also need the token in a header, a JSON body, and, when the
browser says where they come from, the page's own origin: a page on another site can neither
read the token nor send a request that passes (a cross-site form cannot set the header or the
JSON type; a cross-site fetch that could is stopped by CORS, which this server never grants).
The Host header must name this server on loopback (DNS rebinding cannot pass a local page off
as another site's).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

TOKEN_HEADER = "x-povss-token"
TOKEN_COOKIE = "povss_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for a bind address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random token for the page (URL-safe, 128 bits)."""
    return secrets.token_urlsafe(16)


def check_token_text(token: str) -> str:
    """A given token, refused (ValueError) when too short to be a secret."""
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise ValueError(f"the teach UI token must be at least {MIN_TOKEN_CHARS} printable "
                         "characters without spaces")
    return token


def _host_name(host_header: str) -> str:
    """The host of a Host header ('127.0.0.1:8642' -> '127.0.0.1', '[::1]:80' -> '::1')."""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


@dataclass(frozen=True)
class Guard:
    """The page's rules for one bind address and token."""

    host: str
    port: int
    token: str

    @property
    def local(self) -> bool:
        return is_loopback(self.host)

    def _has_token(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    def host_problem(self, headers: Mapping[str, str]) -> str:
        """Why the Host header is refused ('' when it is fine): on loopback it must name
        this machine (DNS rebinding: another site's name resolving to 127.0.0.1)."""
        if not self.local:
            return ""
        if _host_name(headers.get("host", "")) not in LOOPBACK_NAMES:
            return "refused: this page answers only to its own address (Host header)"
        return ""

    def may_read(self, headers: Mapping[str, str], cookies: Mapping[str, str],
                 query_token: str | None = None) -> str:
        """Why a read (the page's state, pictures) is refused ('' when allowed)."""
        problem = self.host_problem(headers)
        if problem or self.local:
            return problem
        if self._has_token(cookies.get(TOKEN_COOKIE)) or self._has_token(
                headers.get(TOKEN_HEADER)) or self._has_token(query_token):
            return ""
        return ("refused: this page needs its token; open the address the teach UI printed "
                "at start (…/?token=…)")

    def may_change(self, method: str, headers: Mapping[str, str],
                   cookies: Mapping[str, str]) -> str:
        """Why a state-changing request is refused ('' when allowed): the token header, a
        JSON body, the page's own origin (when the browser names one), the Host header."""
        problem = self.host_problem(headers)
        if problem:
            return problem
        if method != "POST":
            return "refused: changes are POST requests"
        if not self._has_token(headers.get(TOKEN_HEADER)):
            return ("refused: no valid token with this request; reload the page from the "
                    "address the teach UI printed at start")
        if not self.local and not self._has_token(cookies.get(TOKEN_COOKIE)):
            return "refused: no session; open the address the teach UI printed at start"
        origin = headers.get("origin")
        if origin is not None and not self.same_origin(origin, headers.get("host", "")):
            return f"refused: a cross-site request (from {origin})"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "refused: a cross-site request (Sec-Fetch-Site)"
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return "refused: changes are sent as JSON"
        return ""

    @staticmethod
    def same_origin(origin: str, host_header: str) -> bool:
        """Whether an Origin header names the server the request was sent to."""
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()

    def address(self, shown_host: str | None = None) -> str:
        """The page's address to print at start (with its token where one is needed)."""
        host = shown_host or self.host
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{self.port}/"
        return url if self.local else f"{url}?token={self.token}"
