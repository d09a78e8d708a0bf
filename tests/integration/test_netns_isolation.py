"""Two multi-host test runs on one machine leave each other's namespaces alone (issue #17 item 11).

The multi-host test used to delete (and SIGKILL everything in) every `gwmh*` namespace when
it started and stopped, so a second `deploy/test` as root killed the first one's hosts.
Here a "other run" is a real namespace owned by a live process, with a process in it.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support import netns

pytestmark = pytest.mark.skipif(
    netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())
)


def test_a_run_cleans_up_only_its_own_namespaces() -> None:
    other_owner = subprocess.Popen(["sleep", "60"])  # the other run's test process, alive
    other = f"{netns.BASE}{other_owner.pid}x-worker"
    dead = f"{netns.BASE}{2**22 + 1}x-stale"  # above pid_max's ceiling: an owner that cannot be alive
    subprocess.run(["ip", "netns", "add", other], check=True)
    subprocess.run(["ip", "netns", "add", dead], check=True)
    inside = subprocess.Popen(["ip", "netns", "exec", other, "sleep", "60"])
    try:
        time.sleep(0.3)
        network = netns.Network().start()  # deletes stale networks first
        try:
            assert network.prefix.startswith(f"{netns.BASE}") and len(network.prefix + "v10") <= 15
            network.add_host("a")
        finally:
            network.close()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert other in names  # the other run's host is still there ...
        assert inside.poll() is None  # ... and so is what runs on it
        assert dead not in names  # a run that is gone is cleaned up
        assert network.prefix not in names  # and this run's own
    finally:
        inside.kill()
        other_owner.kill()
        subprocess.run(["ip", "netns", "del", other], check=False)
        subprocess.run(["ip", "netns", "del", dead], check=False)
