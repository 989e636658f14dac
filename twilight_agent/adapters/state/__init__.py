"""State on this host's disk: the SQLite store, the deploy lock, atomic file writes,
the compose ``.env`` and the promotion's record."""
