"""`python -m nxs_cli ...` runs the `nxs` command line."""

from .app import app

if __name__ == "__main__":
    app(prog_name="nxs")
