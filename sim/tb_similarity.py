"""cocotb testbench: quantizer + similarity engine (``hw.similarity.QuantSimilarity``) Verilog.

Run through :func:`sim.runner.run_cocotb` (``tests/test_cocotb_similarity.py``). Parameters
come from :func:`sim.runner.tb_params`: ``params`` (OrbisParams as a dict), ``N`` (tokens
used), ``n_dst``, ``seed``. Every result transferred on ``o`` is checked against the golden
model (``golden.quantize`` + ``golden.nearest_dst`` over the searched dst sorted ascending).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from golden import core as golden
from hw.params import OrbisParams
from sim.runner import tb_params


def _params() -> tuple[OrbisParams, dict]:
    cfg = tb_params()
    d = dict(cfg["params"])
    d["window"] = tuple(d["window"])
    return OrbisParams(**d), cfg


class StreamDriver:
    """Drive an Amaranth stream (``<name>__valid/ready/payload``) from a queue, random idle."""

    def __init__(self, dut, name, clk, idle=0.0, rng=None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk, self.idle, self.rng = clk, idle, rng or random.Random(0)
        self.valid.value = 0
        self.sent = 0

    async def send(self, items):
        """Send every item (an int) in order; return after the last transfer's clock edge."""
        for item in items:
            while self.rng.random() < self.idle:
                await RisingEdge(self.clk)
            self.payload.value = int(item)
            self.valid.value = 1
            while True:
                await ReadOnly()
                fire = int(self.ready.value)
                await RisingEdge(self.clk)
                if fire:
                    break
            self.valid.value = 0
            self.sent += 1


class StreamMonitor:
    """Record every ``valid & ready`` transfer of an output stream; random backpressure."""

    def __init__(self, dut, name, clk, backpressure=0.0, rng=None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk, self.bp, self.rng = clk, backpressure, rng or random.Random(1)
        self.items = []
        self.ready.value = 0
        self.cycle = 0
        self.last_cycle = None

    async def run(self):
        while True:
            self.ready.value = int(self.rng.random() >= self.bp)
            await ReadOnly()
            if int(self.valid.value) and int(self.ready.value):
                self.items.append(int(self.payload.value))
                self.last_cycle = self.cycle
            await RisingEdge(self.clk)
            self.cycle += 1


class TB:
    """One testbench per design: clock, reset, drivers, monitor and the golden model."""

    def __init__(self, dut, p: OrbisParams, seed: int, idle: float, bp: float):
        self.dut, self.p = dut, p
        rng = random.Random(seed)
        self.clk = dut.clk
        Clock(dut.clk, 10, unit="ns").start()
        self.guide = StreamDriver(dut, "i", self.clk, idle, random.Random(rng.random()))
        self.dst = StreamDriver(dut, "dst_load", self.clk, idle, random.Random(rng.random()))
        self.src = StreamDriver(dut, "src", self.clk, idle, random.Random(rng.random()))
        self.mon = StreamMonitor(dut, "o", self.clk, bp, random.Random(rng.random()))
        for s in ("start", "dst_clear", "dst_base", "shift"):
            getattr(dut, s).value = 0

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.clk)
        cocotb.start_soon(self.mon.run())

    async def pulse(self, sig):
        sig.value = 1
        await RisingEdge(self.clk)
        sig.value = 0

    async def load_guide(self, g, shift):
        p = self.p
        self.dut.shift.value = shift
        await self.pulse(self.dut.start)
        beats = []
        for n in range(g.shape[0]):
            for c in range(p.chunks):
                beats.append(sum((int(v) & 0xFFFF) << (16 * k)
                                 for k, v in enumerate(g[n, c * p.L:(c + 1) * p.L])))
        await self.guide.send(beats)
        for _ in range(4):
            await RisingEdge(self.clk)

    async def wait_idle(self, limit=1000):
        for _ in range(limit):
            await ReadOnly()
            if int(self.dut.idle.value):
                await RisingEdge(self.clk)
                return
            await RisingEdge(self.clk)
        raise AssertionError(f"engine not idle after {limit} cycles")

    def decode(self, word):
        ib = self.p.idx_bits
        return (word & ((1 << ib) - 1), (word >> ib) & ((1 << ib) - 1), word >> (2 * ib))

    async def search(self, src, dst_base):
        """Send ``src`` with ``dst_base``; return decoded results and the measured cycles."""
        self.dut.dst_base.value = dst_base
        n0 = len(self.mon.items)
        c0 = self.mon.cycle
        await self.src.send(src)
        while len(self.mon.items) < n0 + len(src):
            await RisingEdge(self.clk)
        cycles = self.mon.last_cycle - c0
        return [self.decode(w) for w in self.mon.items[n0:]], cycles


def expected(q, dst_list, base, src):
    cand = np.array(sorted(dst_list[base:]), dtype=np.int64)
    arg, dist = golden.nearest_dst(q, np.asarray(src, dtype=np.int64), cand)
    return [(int(s), int(cand[a]), int(d)) for s, a, d in zip(src, arg, dist)]


@cocotb.test(timeout_time=3, timeout_unit="ms")
@cocotb.parametrize(mode=["fast", "stress"])
async def test_engine_vs_golden(dut, mode):
    """Two rounds (full search, then dst_base search of promoted dst) against the golden model."""
    p, cfg = _params()
    seed = int(cfg.get("seed", 1)) + (mode == "stress")
    idle, bp = (0.0, 0.0) if mode == "fast" else (0.3, 0.5)
    dut._log.info(f"seed={seed} mode={mode} params={p}")
    rs = np.random.default_rng(seed)
    N, n_dst = int(cfg["N"]), int(cfg["n_dst"])
    if cfg.get("data") == "clustered":
        # Video-like: few prototypes plus small noise, so near-ties and exact ties occur.
        proto = rs.integers(-20000, 20000, size=(8, p.D))
        g = proto[rs.integers(0, 8, size=N)] + rs.integers(-300, 300, size=(N, p.D))
    else:
        g = rs.integers(-32768, 32768, size=(N, p.D))
    shift = golden.shift_for(g, p.B)
    q, mx = golden.quantize(g, shift, p.B)
    perm = [int(t) for t in rs.permutation(N)]
    dst, src = perm[:n_dst], perm[n_dst:]

    tb = TB(dut, p, seed, idle, bp)
    await tb.reset()
    await tb.load_guide(g, shift)
    assert int(dut.max_abs.value) == mx

    await tb.pulse(dut.dst_clear)
    await tb.dst.send(dst)
    got, cycles = await tb.search(src, 0)
    assert got == expected(q, dst, 0, src)
    if mode == "fast":
        util = len(src) * len(dst) * p.D / (p.P * p.L) / cycles
        dut._log.info(f"lane utilization {util:.4f} ({cycles} cycles)")
        # No bubbles: every src takes ceil(n_dst / P) groups of D/L cycles back to back, plus
        # the pipeline latency once (and a few cycles for the dst copy still finishing).
        issue = len(src) * -(-len(dst) // p.P) * p.chunks
        assert cycles <= issue + int(cfg["latency"]) + p.chunks + 6, (cycles, issue)

    prom, rest = src[:max(1, len(src) // 8)], src[max(1, len(src) // 8):]
    await tb.dst.send(prom)
    await tb.wait_idle()                  # the last dst copy finishes after its transfer
    assert int(dut.n_dst.value) == len(dst) + len(prom)
    got, _ = await tb.search(rest, len(dst))
    assert got == expected(q, dst + prom, len(dst), rest)
    await tb.wait_idle(limit=3)
