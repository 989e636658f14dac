"""Benchmarks of twilight-agent on the test bed, side by side with the shell flow it replaces.

``.venv/bin/python -m bench`` runs them all (see ``bench/run.py``, ``bench/README.md``).
"""
