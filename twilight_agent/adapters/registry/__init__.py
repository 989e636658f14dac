"""Adapters to the registry: the HTTP client and its token dance, a deadline per
operation, the promoter's tag push, and where the credentials come from."""
