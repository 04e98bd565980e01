"""The agent's HTTP client for the coordinator's node API."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

import httpx

from wgmesh.api_client import ApiClient
from wgmesh.models import (
    AliasStatement,
    EnrollRequest,
    EnrollResponse,
    Heartbeat,
    HeartbeatAck,
    KeyRotated,
    KeyRotation,
    NetMap,
    NetMapChange,
    RelayGrant,
    Route,
    RouteList,
    StatusReport,
    SubnetsUpdate,
)
from wgmesh.values import Prefix

CHANGES_PATH = "/api/v1/netmap/changes"


class CoordinatorClient(ApiClient):
    """Node calls: enroll, follow the netmap, report status.

    Each write says whether it may go to the next coordinator after a failure that may have reached the
    first (api_client.py): a status report and a subnets statement replace what the coordinator holds,
    a key rotation with the same key again answers the same node (registry.rotate_key), and an
    enrollment retried with the same token, name and key answers the node it made (registry.enroll).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        credential: str | None = None,
        timeout: float = 10.0,
        *,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            base_url,
            bearer=credential,
            user_agent="wgmesh-agent",
            timeout=timeout,
            transport=transport,
            tls=tls,
        )

    @property
    def credential(self) -> str | None:
        """The node credential presented as the bearer token (None before enrollment)."""
        return self.bearer

    @credential.setter
    def credential(self, value: str | None) -> None:
        self.bearer = value

    def enroll(self, req: EnrollRequest) -> EnrollResponse:
        """Redeem the enrollment token."""
        response = self.request(
            "POST", "/api/v1/enroll", json=req.model_dump(mode="json", exclude_none=True), retry=True
        )
        return self.parse(response, "/api/v1/enroll", EnrollResponse)

    def netmap(self, since: int, wait: float) -> NetMap | None:
        """The netmap if newer than `since`, waiting up to `wait` s for a change; None if none came."""
        response = self.request(
            "GET", "/api/v1/netmap", params={"since": str(since), "wait": str(wait)}, timeout=wait + 10
        )
        if response.status_code == 304:
            return None
        return self.parse(response, "/api/v1/netmap", NetMap)

    def netmap_changes(self, since: int, wait: float) -> NetMapChange | None:
        """The netmap as the change from version `since` (whole if the coordinator no longer holds that
        one), waiting up to `wait` s for a change; None if none came. NotFoundError `not_found` from a
        coordinator older than netmap changes."""
        response = self.request(
            "GET", CHANGES_PATH, params={"since": str(since), "wait": str(wait)}, timeout=wait + 10
        )
        if response.status_code == 304:
            return None
        return self.parse(response, CHANGES_PATH, NetMapChange)

    def rotate_key(self, public_key: str) -> KeyRotated:
        """Give the coordinator this node's new public key; answers the new credential and netmap."""
        return self.call(
            "POST",
            "/api/v1/node/key",
            KeyRotated,
            json=KeyRotation(public_key=public_key).model_dump(),
            retry=True,
        )

    def report(self, status: StatusReport) -> None:
        """Post a status report."""
        self.request(
            "POST", "/api/v1/status", json=status.model_dump(mode="json", exclude_none=True), retry=True
        )

    def heartbeat(self, beat: Heartbeat) -> HeartbeatAck:
        """Say the node is alive and its last report stands but for counters (agent/reporting.py).
        NotFoundError `not_found` from a coordinator older than heartbeats."""
        return self.call("POST", "/api/v1/node/heartbeat", HeartbeatAck, json=beat.model_dump(), retry=True)

    def relay_grant(self) -> RelayGrant:
        """The relays and a fresh relay ticket for this node."""
        return self.call("GET", "/api/v1/node/relay", RelayGrant)

    def advertise(
        self,
        subnets: Sequence[Prefix],
        site: str | None = None,
        aliases: Mapping[Prefix, Prefix] | None = None,
    ) -> list[Route]:
        """Replace this node's advertised subnets, state its site (None: a site of its own) and the
        aliases it names; returns the coordinator's verdict on each subnet."""
        update = SubnetsUpdate(
            subnets=list(subnets),
            site=site,
            aliases=[AliasStatement(prefix=p, alias=a) for p, a in (aliases or {}).items()],
        )
        # No site or aliases, no field: a coordinator from before them (it refuses unknown fields) answers.
        body = update.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        body.setdefault("subnets", [])
        response = self.request("PUT", "/api/v1/node/subnets", json=body)
        return self.parse(response, "/api/v1/node/subnets", RouteList).routes
