"""Pure core of twilight-agent: no I/O and no third-party imports."""
