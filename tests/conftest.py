"""Fixtures come from the nxs_mesh.testing plugin (installed with the package)."""
