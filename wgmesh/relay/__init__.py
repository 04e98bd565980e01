"""The TCP relay: wire protocol (`protocol`), coordinator-signed tickets (`tickets`), the asyncio relay
(`server`) and its `wgmesh-relay` program (`main`); see docs/relay-protocol.md."""
