"""The lab's admin client for its coordinator, on the one API client base (wgmesh.api_client).

Lab traffic leaves the root namespace only for the lab's underlay or 127.0.0.1 (layout.is_safe_destination);
an error answer is the exception class its code maps to, with `METHOD PATH: STATUS message` as its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from wgmesh import trust
from wgmesh.api_client import ApiClient, JsonValue
from wgmesh.errors import UnreachableError, WgmeshError
from wgmesh.lab.layout import is_safe_destination
from wgmesh.lab.record import LabState
from wgmesh.lab.timescale import scaled
from wgmesh.models import NodeList, TokenCreated
from wgmesh.pins import Pin
from wgmesh.values import Prefix


class LabApi(ApiClient):
    """Admin calls to a lab's coordinator."""

    def __init__(
        self,
        url: str | Sequence[str],
        admin_token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        pin: Pin | None = None,
    ) -> None:
        for each in [url] if isinstance(url, str) else url:
            host = urlsplit(each).hostname or ""
            if not is_safe_destination(host):
                raise WgmeshError(f"refusing to send lab traffic to {host}", code="unsafe_destination")
        super().__init__(
            url,
            bearer=admin_token,
            user_agent="wgmesh-lab",
            timeout=timeout,
            transport=transport,
            tls=trust.for_client(pin, None),
        )

    def describe(
        self, method: str, path: str, response: httpx.Response, code: str | None, message: str
    ) -> str:
        """`METHOD PATH: STATUS message`, the body's start when it is not a wgmesh error."""
        return (
            f"{method} {path}: {response.status_code} {message if code is not None else response.text[:200]}"
        )

    def node_names(self, timeout: float) -> set[str]:
        """The names of the enrolled nodes."""
        return {node.name for node in self.call("GET", "/api/v1/nodes", NodeList, timeout=timeout).nodes}

    def create_token(self, description: str, allow_subnets: Sequence[Prefix] = ()) -> str:
        """A new reusable enrollment token that does not expire, approving routes inside `allow_subnets`."""
        body = {
            "reusable": True,
            "expires_in": None,
            "description": description,
            "allow_subnets": [str(p) for p in allow_subnets],
        }
        return self.call("POST", "/api/v1/tokens", TokenCreated, json=body).token

    def topology_links(self, timeout: float) -> list[dict[str, JsonValue]]:
        """The coordinator's topology links as it sends them (status shows them as they are)."""
        document = self.json("GET", "/api/v1/topology", timeout=timeout)
        links = document.get("links") if isinstance(document, dict) else None
        if not isinstance(links, list):
            raise UnreachableError("GET /api/v1/topology: no list of links", code="bad_answer")
        return [link for link in links if isinstance(link, dict)]


def admin_client(state: LabState, url: str | None = None) -> LabApi:
    """An admin client for the lab's coordinators on their hub addresses, failing over from the first to
    the next (or for the one at `url`).

    A client per call, as before: a restarted coordinator never meets a pooled connection to its past.
    """
    pin = Pin.parse(state.coordinator_pin) if state.coordinator_pin else None
    urls = state.plan().coordinator_urls if url is None else url
    return LabApi(urls, state.admin_token, timeout=scaled(10.0), pin=pin)
