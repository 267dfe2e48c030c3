"""Routing simulations to trainer ranks, and their registration with a remote rank's receiver."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
import zmq

from gensim.client import Client
from gensim.simulations import FieldSpec
from gensim.transport.receiver import Receiver
from gensim.transport.routing import (
    Endpoint,
    RankRouter,
    Registrar,
    RoutingRule,
    advertised,
    control_address,
    sign_request,
)

FIELDS = [FieldSpec("u", (4,))]
TOKEN = bytes(range(32))


@dataclass
class Record:
    sim_id: int
    params: list[float]
    purpose: str
    rank: int | None = None


def test_round_robin_over_ranks_and_held_out_simulations_on_rank_zero():
    rule = RoutingRule()
    picks = [rule.choose(p, 3) for p in ["validation", "train", "train", "validation", "train", "train"]]
    assert picks == [0, 0, 1, 0, 2, 0]
    restored = RoutingRule()
    restored.load_state_dict(rule.state_dict())
    assert restored.choose("train", 3) == rule.choose("train", 3) == 1


def test_routing_to_chosen_ranks_only_and_clear_errors():
    rule = RoutingRule(ranks=[1])
    assert [rule.choose("train", 2) for _ in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError, match="outside 0..0"):
        RoutingRule(ranks=[1]).choose("train", 1)
    with pytest.raises(ValueError, match="at least one rank"):
        RoutingRule(ranks=[])


def test_advertised_and_control_addresses():
    assert advertised("tcp://0.0.0.0:5000", "node7") == "tcp://node7:5000"
    assert advertised("tcp://127.0.0.1:5000", "node7") == "tcp://127.0.0.1:5000"
    assert control_address("tcp://127.0.0.1:*") == "tcp://127.0.0.1:*"
    assert control_address("tcp://eth0:5555") == "tcp://eth0:*"
    assert control_address("ipc:///tmp/x/rx") == "ipc:///tmp/x/rx.registrar"


@pytest.fixture
def two_ranks():
    """Rank 0's receiver and router, and a 'rank 1' receiver behind its registrar, in one process."""
    got: dict[str, list] = {"train0": [], "validation0": [], "train1": []}
    rx0 = Receiver(FIELDS, TOKEN).start()
    rx1 = Receiver(FIELDS, TOKEN).start()
    registrar = Registrar(rx1, {"train": got["train1"].append}, TOKEN)
    endpoints = [Endpoint(0, rx0.address), Endpoint(1, rx1.address, registrar.address)]
    router = RankRouter(
        rx0, {"train": got["train0"].append, "validation": got["validation0"].append}, endpoints, TOKEN, timeout_s=5.0
    )
    try:
        yield router, registrar, got
    finally:
        router.close()
        registrar.stop()
        rx0.stop()
        rx1.stop()


def send(address: str, sim_id: int, value: float) -> None:
    with Client(address, TOKEN, sim_id, fields=FIELDS) as client:
        client.send(0, 0.5, {"u": np.full(4, value, np.float32)})
        client.end()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_each_simulation_streams_to_the_rank_it_was_registered_with(two_ranks):
    router, _, got = two_ranks
    records = [Record(0, [1.0], "validation"), Record(1, [2.0], "train"), Record(2, [3.0], "train")]
    addresses = [router.assign(r) for r in records]
    assert [r.rank for r in records] == [0, 0, 1]
    for r, address in zip(records, addresses):
        send(address, r.sim_id, r.params[0])
    assert wait_for(lambda: sum(len(v) for v in got.values()) == 3)
    assert [s.sim_id for s in got["validation0"]] == [0]
    assert [s.sim_id for s in got["train0"]] == [1]
    # The remote rank got the parameters from the registration, not from the wire.
    assert [(s.sim_id, float(s.params[0])) for s in got["train1"]] == [(2, 3.0)]


def test_a_registration_without_a_valid_tag_is_refused(two_ranks):
    _, registrar, _ = two_ranks
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(registrar.address)
        request = {"sim_id": 5, "params": [1.0], "purpose": "train"}
        signed = json.loads(sign_request(TOKEN, request))
        for bad in [
            sign_request(bytes(32), request),  # another key
            json.dumps({**request, "token": TOKEN.hex()}),  # version 1: the key itself, unsigned
            json.dumps({"body": json.dumps({**request, "sim_id": 6}), "mac": signed["mac"]}),  # altered
            json.dumps({"body": signed["body"]}),  # no tag
            sign_request(TOKEN, {**request, "purpose": "validation"}),  # not served by this rank
            json.dumps("not an object"),
        ]:
            req.send_string(bad)
            assert req.poll(5000), "the registrar must answer every request"
            reply = json.loads(req.recv_string())
            assert reply["ok"] is False and reply["error"]
        req.send(b"\xff not json")
        assert req.poll(5000) and json.loads(req.recv_string())["ok"] is False
        req.close()
    finally:
        ctx.term()
    assert registrar.receiver.stats().accepted_per_sim == {}, "nothing may be registered by a refused request"


def test_a_rank_that_does_not_answer_is_a_clear_error():
    rx0 = Receiver(FIELDS, TOKEN).start()
    ctx = zmq.Context()
    silent = ctx.socket(zmq.REP)  # bound, never answers: a hung trainer process
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    router = RankRouter(
        rx0,
        {"train": print, "validation": print},
        [Endpoint(0, rx0.address), Endpoint(1, "tcp://127.0.0.1:1", f"tcp://127.0.0.1:{port}")],
        TOKEN,
        timeout_s=0.3,
    )
    try:
        router.assign(Record(0, [1.0], "train"))  # rank 0
        with pytest.raises(RuntimeError, match="did not acknowledge"):
            router.assign(Record(1, [1.0], "train"))  # rank 1
    finally:
        router.close()
        silent.close(linger=0)
        ctx.term()
        rx0.stop()
