"""The only agent modules that touch the kernel: WireGuard backends, routes and the firewall."""
