"""A swarm task's log is read under the same 64 KiB cap as a container's: a task that
wrote one 300 MiB line and failed leaves the agent's log read (``SwarmTarget.logs_tail``,
what a rollback keeps in the history row) under 80 MB of peak RSS, measured in a child
process (``tests/peak_rss.py``)."""

from __future__ import annotations

import time

import docker.auth
import docker.types

from testbed.util import wait_until
from tests.integration.deploybed import push
from tests.peak_rss import run_measured
from tests.swarm.swarmbed import SwarmSite, elapsed

LOG_BYTES = 300 * 1024 * 1024
RSS_LIMIT_KB = 80 * 1024
# One line, no newline: the engine bounds a tail in lines, never in bytes.
WRITER = f"head -c {LOG_BYTES} /dev/zero | tr '\\0' x; echo; echo fatal: end of log; exit 3"
READER = """
import sys
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.adapters.docker.swarm_target import SwarmTarget
text = SwarmTarget(DockerRuntime(), service=sys.argv[1]).logs_tail(sys.argv[2], 50)
RESULT = {"chars": len(text), "head": text[:300], "tail": text[-200:]}
"""


def test_a_300_mib_task_log_is_read_under_the_cap(swarm_site: SwarmSite) -> None:
    site, t0 = swarm_site, time.monotonic()
    img = push(site, "v1")
    api = site.bed.docker.api
    spec = docker.types.ContainerSpec(f"{img.ref}@{img.digest}", command=["sh", "-c", WRITER])
    template = docker.types.TaskTemplate(spec, restart_policy=docker.types.RestartPolicy("none"))
    auth = docker.auth.encode_header({**site.bed.auth, "serveraddress": site.bed.host})
    res = api._post_json(api._url("/services/create"), headers={"X-Registry-Auth": auth},
                         data={"Name": site.name, "TaskTemplate": template})
    sid = str(api._result(res, True)["ID"])

    def failed() -> bool:
        return any(t["Status"]["State"] == "failed" for t in api.tasks(filters={"service": sid}))
    wait_until(failed, timeout=120, interval=0.5, what="the log writer's task to fail")
    written = elapsed(t0)

    got = run_measured(READER, site.name, f"{sid}@{img.digest}")
    print(f"300 MiB task log: written in {written}s, read at peak RSS "
          f"{got['peak_kb'] / 1024:.1f} MiB ({got['chars']} chars kept), total {elapsed(t0)}s")
    assert got["peak_kb"] < RSS_LIMIT_KB, got
    assert "exit code 3" in got["head"], got
    assert got["chars"] < 70 * 1024, got
    assert "xxxx" in got["tail"] and "[log tail cut at 64 KiB]" in got["tail"], got
