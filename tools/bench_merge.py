"""Merge/unmerge line-rate figures, measured in the Amaranth simulator at ``ecp5-default``.

A realistic call: a ``2 x 16 x 16`` grid (N = 512 tokens, 64 activations in 8 beats of 8),
guide features matched by ``golden.match`` with half of the src merged, no idle on the inputs
and no backpressure on the output. Outputs are checked against the golden model, so a figure
never comes from a wrong result.

Figures (beats are ``x_beat`` stream transfers):

``merge.beats_per_cycle``
    ``replace`` merger: ``x`` beats taken over the cycles from the first to the last ``x``
    transfer. This is the line rate of the filter; its output carries only the kept share
    (``merge.replace_out_beats_per_cycle`` = output beats over cycles from first to last
    output beat, about ``n_kept / N``).
``merge.mean_beats_per_cycle``
    ``mean`` merger, output pass: output beats over cycles from first to last output beat.
``merge.mean_in_beats_per_cycle``, ``merge.mean_cycles_per_call``
    ``mean`` accumulate pass rate, and the whole call from ``start`` to ``done`` (both passes).
``unmerge.beats_per_cycle``
    Output beats over cycles from first to last output beat when every ``y`` beat a token
    needs is already in (``y`` sent first): the unmerger's line rate.
``unmerge.streaming_beats_per_cycle``, ``unmerge.streaming_cycles_per_call``
    The same with ``y`` and the map streaming together flat out. The output stalls until
    ``y`` has reached the dst of each merged token; with random guide features global
    matching sends merged tokens to dsts anywhere in the grid, so this is data dependent
    (a lower bound for matchings with local structure).
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

import golden as G
from hw.merge import Merger, Unmerger
from hw.params import preset

GRID = (2, 16, 16)


def _beats(x, Lx):
    return [[int(v) for v in row[b * Lx:(b + 1) * Lx]]
            for row in np.asarray(x) for b in range(x.shape[1] // Lx)]


def _simulate(dut, inputs, sizes, max_cycles=1_000_000, after=None):
    """Drive ``inputs`` (stream name -> beats/entries) flat out, ``o`` always ready.

    ``after = (a, b)`` holds stream ``a`` idle until stream ``b`` has sent everything.

    Returns ``(out_beats, cycles_of_out, cycles_of_in, call_cycles)``: the output payloads,
    the cycle numbers of output transfers and of each input stream's transfers.
    """
    out, t_out = [], []
    t_in = {name: [] for name in inputs}
    call = {}
    finished = set()

    def driver(name, items):
        port = getattr(dut, name)

        async def tb(ctx):
            if after and after[0] == name:
                while after[1] not in finished:
                    await ctx.tick()
            for it in items:
                ctx.set(port.valid, 1)
                ctx.set(port.payload, it)
                await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
            finished.add(name)
        return tb

    async def main(ctx):
        ctx.set(dut.o.ready, 1)
        while ctx.get(dut.busy):       # the mean merger clears its memories after reset
            await ctx.tick()
        for attr, v in sizes.items():
            ctx.set(getattr(dut, attr), v)
        ctx.set(dut.start, 1)
        cycle = 0
        call["start"] = 0
        while True:
            _, _, done, ov, pl, *ins = await ctx.tick().sample(
                dut.done, dut.o.valid, dut.o.payload,
                *[v for n in inputs for v in (getattr(dut, n).valid, getattr(dut, n).ready)])
            ctx.set(dut.start, 0)
            if ov:
                out.append(list(pl.data))
                t_out.append(cycle)
            for i, n in enumerate(inputs):
                if ins[2 * i] and ins[2 * i + 1]:
                    t_in[n].append(cycle)
            if done:
                call["done"] = cycle
                break
            cycle += 1
            assert cycle < max_cycles, "call did not finish"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name, items in inputs.items():
        sim.add_testbench(driver(name, items), background=True)
    sim.add_testbench(main)
    sim.run()
    return out, t_out, t_in, call["done"] - call["start"]


def _rate(times):
    return len(times) / (times[-1] - times[0] + 1) if times else 0.0


def _entries(res):
    return [{"kind": int(k), "target": int(t), "pos": int(p)}
            for k, t, p in zip(res.kind, res.target, res.pos)]


def _problem(p, grid, seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(-20000, 20000, (grid.N, 16)).astype(np.int16)
    n_src = grid.N - G.window_count(grid)
    res = G.match(g, grid, r=n_src // 2, B=8, NB=64, hist_mant=2, R=0, seed=1 + seed)
    lo, hi = -(1 << (p.Wx - 1)), (1 << (p.Wx - 1)) - 1
    x = rng.integers(lo, hi + 1, (grid.N, p.Dx))
    y = rng.integers(lo, hi + 1, (res.n_kept, p.Dx))
    return res, x, y


def measure_merge(p, grid, seed=1) -> dict:
    """Rates of one merger call of ``p.merge_mode`` on ``grid``; checked against golden."""
    res, x, _ = _problem(p, grid, seed)
    dut = Merger(p)
    out, t_out, t_in, cycles = _simulate(
        dut, {"map": _entries(res), "x": [{"data": b} for b in _beats(x, p.Lx)]},
        {"n_tokens": res.N})
    exp = G.merge(x, res, p.merge_mode)
    got = np.array(out, dtype=np.int64).reshape(-1, p.Dx)
    if not np.array_equal(got, exp):
        raise AssertionError(f"merger ({p.merge_mode}) output differs from golden.merge")
    return {"in_beats_per_cycle": _rate(t_in["x"]), "out_beats_per_cycle": _rate(t_out),
            "kept_fraction": res.n_kept / res.N, "cycles": cycles, "latency": dut.latency}


def measure_unmerge(p, grid, seed=1, preload=False) -> dict:
    """Output rate of one unmerger call on ``grid``; checked against golden.

    ``preload``: the map is held back until all of ``y`` is in, so no output waits for a
    ``y`` beat: the block's own line rate. Otherwise ``y`` and the map stream together and
    the output waits whenever a merged token's dst lies ahead of the ``y`` received so far.
    """
    res, _, y = _problem(p, grid, seed)
    dut = Unmerger(p)
    out, t_out, t_in, cycles = _simulate(
        dut, {"map": _entries(res), "y": [{"data": b} for b in _beats(y, p.Lx)]},
        {"n_tokens": res.N, "n_kept": res.n_kept}, after=("map", "y") if preload else None)
    got = np.array(out, dtype=np.int64).reshape(-1, p.Dx)
    if not np.array_equal(got, G.unmerge(y, res)):
        raise AssertionError("unmerger output differs from golden.unmerge")
    return {"out_beats_per_cycle": _rate(t_out), "cycles": cycles, "latency": dut.latency}


def run() -> dict:
    grid = G.Grid(*GRID)
    rep = measure_merge(preset("ecp5-default", merge_mode="replace"), grid)
    mean = measure_merge(preset("ecp5-default", merge_mode="mean"), grid)
    un = measure_unmerge(preset("ecp5-default"), grid, preload=True)
    stream = measure_unmerge(preset("ecp5-default"), grid)
    return {
        "merge.beats_per_cycle": rep["in_beats_per_cycle"],
        "merge.replace_out_beats_per_cycle": rep["out_beats_per_cycle"],
        "merge.kept_fraction": rep["kept_fraction"],
        "merge.mean_beats_per_cycle": mean["out_beats_per_cycle"],
        "merge.mean_in_beats_per_cycle": mean["in_beats_per_cycle"],
        "merge.mean_cycles_per_call": float(mean["cycles"]),
        "unmerge.beats_per_cycle": un["out_beats_per_cycle"],
        "unmerge.streaming_beats_per_cycle": stream["out_beats_per_cycle"],
        "unmerge.streaming_cycles_per_call": float(stream["cycles"]),
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:36s} {v:.4g}")
