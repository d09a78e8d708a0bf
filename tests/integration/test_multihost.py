"""Scale-out on separate hosts: network namespaces on a bridge, each host with its own address.

Hosts: a client, the upstream simulator, Redis (and, where the kernel lacks netem, a relay
that adds the latency in front of it), two web hosts (gunicorn), three worker hosts
(`python -m workers`), and for the high-availability part a Redis primary, a replica and
three Sentinels, each on its own host. Requests leave from the client host (thread pools
whose threads `setns` onto it); the test process itself, the ".1" address on the bridge,
only starts things and reads Redis and the simulator to check. It proves, with real
processes and real sockets:

- a conversation continues whichever web host and worker host serves each turn;
- killing a worker host mid-turn ends that turn with an error within the lease bound,
  and the next turn succeeds on another host;
- turns per minute grow with worker hosts (1 → 2 → 3), printed as figures;
- with Sentinel, a failover of the Redis primary under load is ridden out without
  restarting anything; the errors in the window and the recovery time are printed.

Needs root and `ip netns` (CI runs it as root); skips with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from service.state.conversations import ConversationStore
from tests.integration.conftest import body
from tests.support.netns import Host, Network, unavailable_reason
from tests.support.sentinel import MASTER, RedisNode, SentinelCluster
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WorkerProcess, gateway_env, wait_for

pytestmark = [pytest.mark.slow]

WORKER_HOSTS = ("worker1", "worker2", "worker3")
HA_HOSTS = ("ha-primary", "ha-replica", "sentinel1", "sentinel2", "sentinel3")
LEASE_SECONDS = 3
DELAY_MS = 2.0  # added one way between hosts (netem), or on each direction of the Redis relay
SLOW_TURN = "[sim:slow=0.4][sim:long=15] go on"  # ~6 s of answer: caught mid-turn
QUICK_TURN = "[sim:slow=0.05][sim:long=6] quick"  # ~0.3 s: many turns across a failover
TIMED_TURN = "[sim:slow=0.1][sim:long=10] count"  # ~1 s: workers' slots, not CPU, bound throughput


@dataclasses.dataclass
class Cluster:
    """The built hosts and the processes on them that live for the whole module."""

    net: Network
    simulator: SimulatorProcess
    redis_url: str
    redis: Redis
    env: dict[str, str]
    webs: list[GunicornServer]
    logs: Path
    client: ThreadPoolExecutor  # its threads live on the client host

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def start_workers(
        self, names: tuple[str, ...], env: dict[str, str] | None = None, registry_url: str | None = None
    ) -> list[Worker]:
        """One worker process on each named host, all registered with RQ."""
        workers = [
            Worker(
                name,
                WorkerProcess(
                    env or self.env,
                    prefix=self.host(name).prefix,
                    stderr=self.logs / f"{name}.log",
                    registry_url=registry_url or self.redis_url,
                ),
            )
            for name in names
        ]
        for worker in workers:
            worker.process.start(wait=False)
        for worker in workers:
            worker.process.wait_registered(timeout=40)
        return workers


@dataclasses.dataclass
class Worker:
    host: str
    process: WorkerProcess

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.process.stop(signal.SIGTERM, timeout=20)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("multihost")
    net = Network(delay_ms=DELAY_MS)
    started: list[Any] = []
    try:
        net.start()
        for name in ("client", "upstream", "redis", "web1", "web2", *WORKER_HOSTS, *HA_HOSTS):
            net.add_host(name)
        print(f"\nmultihost: hosts on {net.subnet}.0/24, latency via {net.latency}", flush=True)
        upstream = net.hosts["upstream"]
        simulator = SimulatorProcess(host=upstream.address, max_turns=1000, prefix=upstream.prefix).start()
        started.append(simulator)
        redis_host = net.hosts["redis"]
        node = RedisNode(redis_host.address, 6379, prefix=redis_host.prefix).start()
        started.append(node)
        port = 6379
        if net.latency == "userspace":  # no sch_netem: every host reaches Redis through a delaying relay
            port = 6380
            relay = subprocess.Popen(
                [
                    *redis_host.prefix,
                    sys.executable,
                    "-m",
                    "tests.support.latency_relay",
                    redis_host.address,
                    str(port),
                    redis_host.address,
                    "6379",
                    str(DELAY_MS),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            started.append(relay)
            assert relay.stdout is not None and relay.stdout.readline().strip() == b"READY"
        print(f"multihost: {DELAY_MS} ms added each way ({net.latency})", flush=True)
        redis_url = f"redis://{redis_host.address}:{port}/0"
        env = gateway_env(
            redis_url,
            simulator.http_url,
            ALLOW_OPEN="1",
            WORKER_CONCURRENCY="2",
            WORKER_LEASE_SECONDS=str(LEASE_SECONDS),
            QUEUE_WAIT_TIMEOUT="30",
            UPSTREAM_FIRST_TOKEN_TIMEOUT="10",
            UPSTREAM_IDLE_TIMEOUT="10",
        )
        webs = []
        for name in ("web1", "web2"):
            host = net.hosts[name]
            log = (logs / f"{name}.log").open("ab")
            web = GunicornServer(env, stderr=log, prefix=host.prefix, host=host.address)
            started.append(web)
            webs.append(web.start(timeout=40))
        redis = Redis.from_url(redis_url)
        client = ThreadPoolExecutor(16, initializer=net.hosts["client"].enter_in_this_thread)
        web1 = net.hosts["web1"].address, webs[0].port
        assert client.submit(source_address, web1).result() == net.hosts["client"].address
        yield Cluster(net, simulator, redis_url, redis, env, webs, logs, client)
        client.shutdown()
        redis.close()
    finally:
        for thing in reversed(started):
            if isinstance(thing, subprocess.Popen):
                thing.kill()
                thing.wait(5)
            else:
                thing.stop()
        net.close()


def source_address(peer: tuple[str, int]) -> str:
    """The local address a connection to `peer` leaves from (proves which host a thread is on)."""
    with socket.create_connection(peer, timeout=5) as sock:
        return str(sock.getsockname()[0])


def post(web: GunicornServer, content: str, **extra: Any) -> requests.Response:
    return requests.post(f"{web.url}/v1/chat/completions", json=body(content, **extra), timeout=90)


def turn(cluster: Cluster, web: GunicornServer, content: str, **extra: Any) -> requests.Response:
    """One chat completion, sent from the client host."""
    return cluster.client.submit(post, web, content, **extra).result()


def served_by(cluster: Cluster, completion_id: str, workers: list[Worker], redis: Redis | None = None) -> str:
    """The worker host whose RQ worker ran a job (from the job record's worker name, `host.pid`)."""
    job = Job.fetch(completion_id, connection=redis or cluster.redis, serializer=JSONSerializer)
    pid = int(str(job.worker_name).rsplit(".", 1)[1])
    return next(worker.host for worker in workers if worker.pid == pid)


def running_job(queue: Queue, *, besides: str) -> str | None:
    """The id of a running turn other than `besides` (a finished job may linger in the registry)."""
    return next((job for job in StartedJobRegistry(queue=queue).get_job_ids() if job != besides), None)


def test_conversation_continues_whichever_web_and_worker_host_serves_each_turn(cluster: Cluster) -> None:
    workers = cluster.start_workers(WORKER_HOSTS)
    try:
        conversation_id = None
        route: list[tuple[str, str]] = []
        for index in range(8):
            web = cluster.webs[index % 2]
            extra: dict[str, str] = {"conversation_id": conversation_id} if conversation_id else {}
            response = turn(cluster, web, f"turn {index}", **extra)
            assert response.status_code == 200, response.text
            conversation_id = response.headers["X-Conversation-Id"]
            route.append((f"web{index % 2 + 1}", served_by(cluster, response.json()["id"], workers)))
    finally:
        stop_all(workers)
    print(f"multihost: (web host, worker host) per turn: {route}", flush=True)
    assert conversation_id is not None
    stored = ConversationStore(cluster.redis, ttl=60).get(conversation_id)
    assert stored is not None and stored.handle is not None
    upstream = cluster.simulator.conversation(str(stored.handle["conversation_id"]))
    assert upstream is not None
    assert [t["user"] for t in upstream["turns"]] == [
        f"turn {i}" for i in range(8)
    ]  # one upstream conversation
    assert {web for web, _ in route} == {"web1", "web2"}
    assert len({worker for _, worker in route}) >= 2, route


def test_killing_a_worker_host_mid_turn_ends_it_within_the_lease_and_the_next_turn_goes_elsewhere(
    cluster: Cluster,
) -> None:
    workers = cluster.start_workers(WORKER_HOSTS)
    queue = Queue("chat", connection=cluster.redis, serializer=JSONSerializer)
    try:
        first = turn(cluster, cluster.webs[0], "remember me")
        assert first.status_code == 200, first.text
        conversation_id = first.headers["X-Conversation-Id"]
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(turn, cluster, cluster.webs[1], SLOW_TURN, conversation_id=conversation_id)
            job_id = wait_for(lambda: running_job(queue, besides=first.json()["id"]), timeout=30)
            victim = served_by(cluster, job_id, workers)
            time.sleep(1.0)  # well into the answer
            killed_at = time.monotonic()
            assert cluster.host(victim).kill_all()  # the whole host: every process on it, SIGKILL
            lost = pending.result(timeout=LEASE_SECONDS * 10)
            ended_after = time.monotonic() - killed_at
        print(
            f"multihost: killed {victim} mid-turn; the turn ended with {lost.status_code} "
            f"{lost.json().get('error', {}).get('code')} {ended_after:.1f} s later (lease {LEASE_SECONDS} s)",
            flush=True,
        )
        assert lost.status_code == 502
        assert lost.json()["error"]["code"] == "worker_lost"
        survivors = [w for w in workers if w.host != victim]
        following = turn(cluster, cluster.webs[0], "still there?", conversation_id=conversation_id)
        assert following.status_code == 200, following.text
        assert following.headers["X-Conversation-Id"] == conversation_id
        assert served_by(cluster, following.json()["id"], workers) in {w.host for w in survivors}
    finally:
        stop_all(workers)


def throughput(cluster: Cluster, hosts: tuple[str, ...], turns: int = 36, clients: int = 12) -> float:
    """Turns per minute the cluster completes with workers on `hosts` (fresh conversations)."""
    workers = cluster.start_workers(hosts)
    try:
        turn(cluster, cluster.webs[0], "warm up")
        statuses: list[int] = []
        lock = threading.Lock()
        todo = iter(range(turns))

        def client() -> None:
            cluster.host("client").enter_in_this_thread()
            for index in todo:  # threads share the iterator: each turn is taken once
                response = post(cluster.webs[index % 2], TIMED_TURN)
                with lock:
                    statuses.append(response.status_code)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - started
    finally:
        stop_all(workers)
    assert statuses == [200] * turns
    return turns / elapsed * 60


def test_turns_per_minute_grow_with_worker_hosts(cluster: Cluster) -> None:
    figures = [throughput(cluster, WORKER_HOSTS[:count]) for count in (1, 2, 3)]
    print(
        "multihost: turns/min with 1, 2, 3 worker hosts (WORKER_CONCURRENCY=2 each): "
        + ", ".join(f"{figure:.0f}" for figure in figures),
        flush=True,
    )
    # Growth, not a speed: each added host must add something, and three must beat one clearly.
    assert figures[0] < figures[1] < figures[2]
    assert figures[2] > 1.5 * figures[0]


@dataclasses.dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all
    code: str = ""  # the error's code, when it failed


def load(
    client: Host, webs: list[GunicornServer], stop: threading.Event, results: list[Outcome], index: int
) -> None:
    """One client on the client host: quick turns back to back, alternating web hosts, until told to stop."""
    client.enter_in_this_thread()
    count = 0
    while not stop.is_set():
        count += 1
        started = time.monotonic()
        try:
            response = requests.post(
                f"{webs[(index + count) % 2].url}/v1/chat/completions", json=body(QUICK_TURN), timeout=60
            )
            status, code = response.status_code, "" if response.ok else response.json()["error"]["code"]
        except requests.RequestException as exc:
            status, code = 0, exc.__class__.__name__
        results.append(Outcome(started, time.monotonic(), status, code))
        if status != 200:
            stop.wait(0.25)  # a client backs off a little after an error, as the SDKs do


def test_sentinel_failover_under_load_is_ridden_out_without_restarts(cluster: Cluster) -> None:
    primary, replica = cluster.host("ha-primary"), cluster.host("ha-replica")
    watchers = [cluster.host(name) for name in HA_HOSTS[2:]]
    ha = SentinelCluster(
        (primary.address, 6379),
        (replica.address, 6379),
        [(host.address, 26379) for host in watchers],
        prefixes={host.address: host.prefix for host in (primary, replica, *watchers)},
    ).start()
    env = dict(cluster.env)
    del env["REDIS_URL"]  # only the Sentinels say where Redis is
    env.update(
        REDIS_SENTINELS=",".join(f"{host.address}:26379" for host in watchers), REDIS_SENTINEL_MASTER=MASTER
    )
    webs: list[GunicornServer] = []
    workers: list[Worker] = []
    ready: list[int] = []
    stop = threading.Event()
    results: list[Outcome] = []
    threads = [
        threading.Thread(target=load, args=(cluster.host("client"), webs, stop, results, i)) for i in range(6)
    ]
    try:
        for name in ("web1", "web2"):
            host = cluster.host(name)
            log = (cluster.logs / f"{name}-ha.log").open("ab")
            webs.append(
                GunicornServer(env, stderr=log, prefix=host.prefix, host=host.address).start(timeout=40)
            )
        workers = cluster.start_workers(WORKER_HOSTS, env, registry_url=f"redis://{primary.address}:6379/0")
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(r.status == 200 for r in results) >= 10, timeout=60)
        killed_at = time.monotonic()
        ha.primary.kill()  # SIGKILL the Redis primary under load

        def recovered() -> bool:
            after = [r for r in results if r.started > killed_at]
            first_ok = next((i for i, r in enumerate(after) if r.status == 200), None)
            return first_ok is not None and sum(r.status == 200 for r in after[first_ok:]) >= 20

        wait_for(recovered, timeout=120, interval=0.2)
        ready = [requests.get(f"{web.url}/readyz", timeout=10).status_code for web in webs]
    finally:
        stop.set()
        for thread in threads:
            thread.join(70)
        alive = all(
            process is not None and process.poll() is None
            for process in [*(web.process for web in webs), *(worker.process.process for worker in workers)]
        )
        for web in webs:
            web.stop()
        stop_all(workers)
        new_primary = ha.master_address()
        ha.stop()
    window = [r for r in results if r.ended > killed_at]
    errors = [r for r in window if r.status != 200]
    recovery = min(r.ended for r in window if r.started > killed_at and r.status == 200) - killed_at
    last_error = max((r.ended for r in errors), default=killed_at) - killed_at
    print(
        f"multihost: Sentinel failover under load: {len(results)} turns, {len(errors)} failed in the window "
        f"({sorted({f'{r.status} {r.code}' for r in errors})}), first turn started after the kill answered "
        f"{recovery:.1f} s after it, last error {last_error:.1f} s after it",
        flush=True,
    )
    assert new_primary == ha.replica.address, new_primary
    assert alive  # no web or worker process restarted (or died) to get there
    assert ready == [200, 200]  # /readyz reaches the new primary too
    ordered = sorted(results, key=lambda r: r.started)
    assert all(r.status == 200 for r in ordered[-10:])  # requests after the failover succeed
