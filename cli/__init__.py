"""The `nxs` command line (installed as the `nxs_cli` package)."""
