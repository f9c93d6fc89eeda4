"""Deployment: server configs for a cluster over Tailscale, and Tailscale discovery."""
