"""The worker: node lifecycle, handlers, the Doctor, task distribution, alerts, health checks.
Uses the mesh only through ``nxs_mesh.client``."""
