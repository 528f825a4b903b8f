"""cocotb testbench for the generated TokenReductionUnit Verilog (tests/test_cocotb_top.py).

Per call: configure and match (guide stream), then run the call: x in, reduced out, a
stand-in for attention (bitwise not of every element), y in, restored out. Every stream is
driven or taken in one per-cycle loop with random idle on the inputs and random backpressure
on the outputs; inputs change after the falling edge and transfers are sampled in the
read-only phase, so what is recorded is exactly what crossed ``valid & ready``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from sim.runner import tb_params

SOURCES = ("guide", "x", "y")
SINKS = ("reduced", "restored")


def pack(values, width):
    v = 0
    for k, e in enumerate(values):
        v |= (int(e) & ((1 << width) - 1)) << (width * k)
    return v


def unpack(v, width, count):
    out = []
    for k in range(count):
        e = (v >> (width * k)) & ((1 << width) - 1)
        out.append(e - (1 << width) if e >> (width - 1) else e)
    return out


class TB:
    def __init__(self, dut, P):
        self.dut, self.P = dut, P
        self.rng = random.Random(P["seed"])
        self.src = {s: [] for s in SOURCES}
        self.sent = {s: 0 for s in SOURCES}
        self.got = {s: [] for s in SINKS}
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self):
        d = self.dut
        d.rst.value = 1
        for sig in ("match_start", "call_start", "call_reuse", "map_read", "cnt_clear",
                    "guide__valid", "x__valid", "y__valid", "reduced__ready",
                    "restored__ready", "map__ready"):
            getattr(d, sig).value = 0
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0

    async def pulse(self, name):
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 1
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0

    async def run_until(self, done, limit):
        """Drive and take every stream each cycle until ``done()`` holds."""
        d, P = self.dut, self.P
        for _ in range(limit):
            await FallingEdge(d.clk)
            offered = {}
            for s in SOURCES:
                port = getattr(d, f"{s}__valid")
                v = self.sent[s] < len(self.src[s]) and self.rng.random() >= P["idle"]
                port.value = int(v)
                if v:
                    getattr(d, f"{s}__payload").value = self.src[s][self.sent[s]]
                offered[s] = v
            ready = {}
            for s in SINKS:
                ready[s] = self.rng.random() >= P["backpressure"]
                getattr(d, f"{s}__ready").value = int(ready[s])
            await ReadOnly()
            for s in SOURCES:
                if offered[s] and int(getattr(d, f"{s}__ready").value):
                    self.sent[s] += 1
            for s in SINKS:
                if ready[s] and int(getattr(d, f"{s}__valid").value):
                    self.got[s].append(int(getattr(d, f"{s}__payload").value))
            if done():
                await FallingEdge(d.clk)
                for s in SOURCES:
                    getattr(d, f"{s}__valid").value = 0
                for s in SINKS:
                    getattr(d, f"{s}__ready").value = 0
                return
        raise AssertionError("the unit did not finish within the cycle limit")


@cocotb.test()
async def top_calls(dut):
    """Match, reduce, attention stand-in, restore: every call equal to the golden model."""
    P = tb_params()
    tb = TB(dut, P)
    await tb.reset()
    Wx, Lx = P["Wx"], P["Lx"]
    for k, call in enumerate(P["calls"]):
        for s in SOURCES:
            tb.src[s], tb.sent[s] = [], 0
        for s in SINKS:
            tb.got[s] = []
        await FallingEdge(dut.clk)
        dut.cfg.value = call["cfg"]
        await tb.pulse("match_start")
        tb.src["guide"] = call["guide"]
        await tb.run_until(lambda: tb.sent["guide"] == len(call["guide"])
                           and not int(dut.match_busy.value), P["max_cycles"])
        assert int(dut.match_error.value) == 0, f"call {k}: match error"
        assert int(dut.fresh.value) == 1
        await tb.pulse("call_start")
        tb.src["x"] = call["x"]
        n_red = len(call["reduced"])
        await tb.run_until(lambda: len(tb.got["reduced"]) == n_red, P["max_cycles"])
        # Attention stand-in on the reduced sequence, then y back in.
        tb.src["y"] = [pack([-e - 1 for e in unpack(v, Wx, Lx)], Wx) for v in tb.got["reduced"]]
        n_rest = len(call["restored"])
        await tb.run_until(lambda: len(tb.got["restored"]) == n_rest
                           and not int(dut.call_busy.value), P["max_cycles"])
        red = [unpack(v, Wx, Lx) for v in tb.got["reduced"]]
        rest = [unpack(v, Wx, Lx) for v in tb.got["restored"]]
        dut._log.info(f"call {k}: {n_red} reduced beats, {n_rest} restored beats, "
                      f"r = {int(dut.r.value)}")
        assert int(dut.r.value) == call["r"], f"call {k}: r"
        assert tb.sent["x"] == len(call["x"]) and tb.sent["y"] == n_red, f"call {k}: beats"
        assert red == call["reduced"], f"call {k}: reduced differs from golden"
        assert rest == call["restored"], f"call {k}: restored differs from golden"
