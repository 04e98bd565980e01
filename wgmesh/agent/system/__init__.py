"""The only agent modules that read or change the kernel's network configuration (netlink, UAPI, nft, tc):
WireGuard backends, links and routes, the firewall, the shaper, and the underlay link's MTU and address.
Sockets the agent merely uses (probes, the shim, the status socket) live with their logic outside."""
