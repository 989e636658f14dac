"""The test bed: a real Docker engine and a GHCR-like token-auth registry on loopback.

Used by the test suite, the demo and the benchmarks. Not shipped with the agent.
"""

from testbed.util import BedError, wait_until

__all__ = ["BedError", "wait_until"]
