"""The README's examples, kept as files so tests/test_readme.py can check and run them as written.

A package (not a bare directory) so that `--handlers examples.resize:registry`, run from the
repository root, finds this directory before any installed distribution's `examples`.
"""
