"""The `botsession` command line."""
