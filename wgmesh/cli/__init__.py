"""The `wgmesh` command line: one module per command group, dispatched by `wgmesh.cli.main`."""
