"""Pure: the agents' versions (`StatusReport.agent_version`, `wgmesh.__version__` of the agent) against the
oldest this coordinator supports: one rule for the topology's warnings, the summary's counts and the
coordinator's log.

A version is compared by its release numbers (`0.10.0` is newer than `0.9.3`, `0.2` is `0.2.0`), a
pre-release (`0.2.0rc1`, `0.2.0.dev3`) older than its release, a post-release (`0.2.0.post1`) newer; a
local label (`0.2.0+deb1`) does not count. A version that is absent (a report from a client that is not an agent), not a version, or `0+unknown` (a copy of
the sources never installed) is unknown: never warned about.
"""

from __future__ import annotations

import functools
import re

MIN_AGENT_VERSION = "0.1.0"
"""The oldest agent this coordinator supports: one reporting an older version is a warning
(`topology.warnings`, `wgmesh status`, the dashboard) and a line in the coordinator's log."""

MAX_LENGTH = 64
"""The longest `agent_version` a report may carry (models.StatusReport)."""
AGENT_PRODUCT = "wgmesh-agent"
"""The product the agent names in its `User-Agent` (`wgmesh-agent/VERSION`, api_client): every agent sends
it, those of 0.1.0 too, and a coordinator of any version ignores it, so the version travels there rather
than in the report's body (which a 0.1.0 coordinator would refuse as an unknown field)."""
_USER_AGENT = re.compile(rf"{AGENT_PRODUCT}/([0-9A-Za-z.+_-]{{1,{MAX_LENGTH}}})")

_VERSION = re.compile(
    r"v?(?P<release>\d{1,9}(?:\.\d{1,9}){0,9})"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(?:[-_.]?(?P<post>post|rev|r)[-_.]?\d*)?"
    r"(?:[-_.]?(?P<dev>dev)[-_.]?\d*)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?",
    re.IGNORECASE,
)
Key = tuple[tuple[int, ...], int]


@functools.lru_cache(maxsize=256)  # every status report asks; a fleet runs a handful of versions
def version_key(version: str | None) -> Key | None:
    """What versions are ordered by: the release numbers without trailing zeros, then 0 for a
    pre-release (or a development release), 1 for the release, 2 for a post-release; None when the version
    is unknown."""
    if version is None:
        return None
    found = _VERSION.fullmatch(version.strip())
    if found is None or (found["local"] or "").lower() == "unknown":
        return None
    numbers = [int(n) for n in found["release"].split(".")]
    while numbers and numbers[-1] == 0:
        numbers.pop()  # 0.2 == 0.2.0: ordered as equal, and 0.1.9 < 0.2 as number by number
    if found["pre"] is not None or (found["dev"] is not None and found["post"] is None):
        return tuple(numbers), 0
    return tuple(numbers), 2 if found["post"] is not None else 1


def from_user_agent(header: str | None) -> str | None:
    """The version an agent's `User-Agent` names (`wgmesh-agent/0.2.0`), or None for any other client."""
    if not header:
        return None
    found = _USER_AGENT.fullmatch(header.split(" ", 1)[0])
    return found[1] if found else None


def is_older(version: str | None, minimum: str = MIN_AGENT_VERSION) -> bool:
    """Whether `version` is known and older than `minimum` (an unknown version is not)."""
    key, floor = version_key(version), version_key(minimum)
    return key is not None and floor is not None and key < floor


def outdated_warning(node: str, version: str, minimum: str = MIN_AGENT_VERSION) -> str:
    """The warning of a node whose agent is older than `minimum` (`is_older`)."""
    return (
        f"{node} runs agent {version}, older than {minimum}, the oldest this coordinator supports: "
        "upgrade its agent"
    )
