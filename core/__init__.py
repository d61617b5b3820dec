"""Squall's core: protocol, node rules, backends. Imports nothing from Tornado."""

#: The server's version, reported in the cluster stats (``/api/stats``).
__version__ = "0.1.0"
