"""Stream drivers for Amaranth-simulator testbenches: random idle and backpressure.

Every transfer (``valid & ready`` at a clock edge) is recorded; tests compare the recorded
lists with the golden model, never cycle positions.
"""

import numpy as np


def vec_beats(arr, per_beat):
    """Split an ``(N, D)`` integer array into beats of ``per_beat`` elements, token order."""
    arr = np.asarray(arr)
    n, d = arr.shape
    return [{"data": [int(v) for v in arr[t, c:c + per_beat]]}
            for t in range(n) for c in range(0, d, per_beat)]


def beats_to_array(beats, width):
    flat = [v for b in beats for v in b]
    return np.array(flat, dtype=np.int64).reshape(-1, width)


async def send(ctx, port, payloads, rng=None, idle=0.0):
    """Drive ``payloads`` into stream ``port`` with probability ``idle`` of an idle cycle."""
    for pl in payloads:
        while rng is not None and idle and rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, pl)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def recv(ctx, port, count, rng=None, backpressure=0.0, convert=None):
    """Take ``count`` transfers from stream ``port`` with random backpressure."""
    out = []
    while len(out) < count:
        ready = not (rng is not None and backpressure and rng.random() < backpressure)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and ready:
            out.append(convert(payload) if convert else payload)
    ctx.set(port.ready, 0)
    return out


def vec_of(payload):
    """An x/guide beat's element list."""
    return [int(v) for v in payload.data]


def map_of(payload):
    return (int(payload.kind), int(payload.target), int(payload.pos))
