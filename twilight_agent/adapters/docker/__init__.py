"""Adapters to the Docker engine: the runtime (docker SDK), the target kinds over it
(a container, a compose group, a swarm service), the health gate and the watch."""
