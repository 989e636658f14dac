"""twilight-agent: a pull-based deploy agent for a single Docker host."""

__version__ = "0.1.0"
