"""Per-simulation time of PlateHeat(substeps=12) in a loop: bare, then streaming every step.

    OMP_NUM_THREADS=1 python reports/online_offline/profile/send_bench.py 150 0.02 [10]

Each step goes through :class:`gensim.client.Client` to a :class:`gensim.transport.Receiver`
(no-op sink, the given ``wake_interval_s``) in another process, as a simulation worker streams
to the trainer. Prints wall and CPU milliseconds per simulation and the time spent in ``send``.
With a third argument ``k``, the steps are also sent ``k`` at a time (held, then sent back to
back), to a fresh receiver.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

from gensim.client import Client
from gensim.simulations import PlateHeat
from gensim.transport import Receiver, wire


def receive(key: bytes, queue: mp.Queue, n: int, wake: float) -> None:
    """Receive ``n`` simulations with a no-op sink; put the address, then the accepted count."""
    sim = PlateHeat(substeps=12)
    rx = Receiver(sim.fields, key, n_steps=sim.n_steps, times=sim.times, wake_interval_s=wake).start()
    for i in range(n):
        rx.register(i, np.zeros(sim.space.dim), lambda sample: None)
    queue.put(rx.address)
    rx.wait_finished(range(n), timeout=600)
    queue.put(rx.stats().accepted)
    rx.stop()


def cpu_s(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    wake = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    sim = PlateHeat(substeps=12)
    rng = np.random.default_rng(0)
    params = [sim.space.lower + rng.random(sim.space.dim) * (sim.space.upper - sim.space.lower) for _ in range(n)]
    cpu0, t0 = cpu_s(resource.getrusage(resource.RUSAGE_SELF)), time.perf_counter()
    for p in params:
        for _ in sim.run(p):
            pass
    bare, cpu1 = time.perf_counter() - t0, cpu_s(resource.getrusage(resource.RUSAGE_SELF))
    key, queue = wire.new_key(), mp.Queue()
    proc = mp.Process(target=receive, args=(key, queue, n, wake))
    proc.start()
    address, in_send = queue.get(), 0.0
    t0 = time.perf_counter()
    for i, p in enumerate(params):
        with Client(address, key, i, fields=sim.fields) as client:
            for step, t, fields in sim.run(p):
                start = time.perf_counter()
                client.send(step, t, fields)
                in_send += time.perf_counter() - start
            client.end()
    streamed, cpu2 = time.perf_counter() - t0, cpu_s(resource.getrusage(resource.RUSAGE_SELF))
    accepted = queue.get()
    proc.join()
    group = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if group:
        key, queue = wire.new_key(), mp.Queue()
        proc = mp.Process(target=receive, args=(key, queue, n, wake))
        proc.start()
        address, grouped_send = queue.get(), 0.0
        t0 = time.perf_counter()
        for i, p in enumerate(params):
            with Client(address, key, i, fields=sim.fields, sndhwm=1000) as client:
                held = []
                for step_t_fields in sim.run(p):
                    held.append(step_t_fields)
                    if len(held) == group:
                        start = time.perf_counter()
                        for step, t, fields in held:
                            client.send(step, t, fields)
                        grouped_send += time.perf_counter() - start
                        held = []
                for step, t, fields in held:
                    client.send(step, t, fields)
                client.end()
        grouped, cpu3 = time.perf_counter() - t0, cpu_s(resource.getrusage(resource.RUSAGE_SELF))
        queue.get()
        proc.join()
    print(f"load {os.getloadavg()[0]:.2f}, {n} simulations, wake_interval_s={wake}, {accepted} steps accepted")
    print(f"bare: {bare / n * 1e3:.1f} ms/sim (cpu {(cpu1 - cpu0) / n * 1e3:.1f})")
    print(
        f"streamed: {streamed / n * 1e3:.1f} ms/sim (cpu {(cpu2 - cpu1) / n * 1e3:.1f}), in send "
        f"{in_send / n * 1e3:.1f} ms/sim = {in_send / n / sim.n_steps * 1e6:.0f} us/message"
    )
    if group:
        print(
            f"sent {group} at a time: {grouped / n * 1e3:.1f} ms/sim (cpu {(cpu3 - cpu2) / n * 1e3:.1f}), in send "
            f"{grouped_send / n * 1e3:.1f} ms/sim = {grouped_send / n / sim.n_steps * 1e6:.0f} us/message"
        )
