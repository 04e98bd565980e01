"""The TCP relay: wire protocol (`protocol`) and coordinator-signed tickets (`tickets`); see docs/relay-protocol.md."""
