"""The gateway agent: enrollment, netmap following, data plane and status reports."""
