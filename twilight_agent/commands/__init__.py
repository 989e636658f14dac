"""One module per area of the CLI; each function is ``(settings, args) -> int``."""
