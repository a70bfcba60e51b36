"""Clients of the botsession API for the processes that use it (issue 22)."""
