"""Test support, importable by this repository's tests and by anyone testing code built on alignbench.

- ``synthetic``: stores filled with runs of known scores (no model, no torch);
- ``cli``: the CLI invoked in-process, one-line-error assertions, byte-level store comparisons;
- ``postgres``: a throw-away PostgreSQL server on loopback (Debian's binaries);
- ``browser``: headless Chromium over the DevTools protocol, no network.
"""
