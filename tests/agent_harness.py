"""A real `Agent` over the in-memory backends, for tests that run its steps against a real coordinator:
the planner, the state directory and the HTTP client are the real ones, this machine is left alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from wgmesh.agent.agent import Agent
from wgmesh.agent.config import AgentConfig
from wgmesh.agent.system.memory import memory_dataplane


@contextmanager
def memory_agent(cfg: AgentConfig, local: Sequence[tuple[str, str]] = ()) -> Iterator[Agent]:
    """An agent for `cfg` whose data plane is in memory (`local`: the host's connected subnets); its
    packet thread, sockets and HTTP client are closed afterwards."""
    agent = Agent(cfg)
    agent.dataplane = memory_dataplane(cfg.interface, agent.keypair.private_key, cfg.listen_port, local)
    try:
        yield agent
    finally:
        agent.paths.stop()
        agent.paths.net.loop.close()
        agent.dataplane.close()
        agent.client.close()
