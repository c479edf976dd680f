"""Launchers run what an adapter describes: a local process, or an external endpoint."""
