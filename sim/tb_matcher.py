"""cocotb testbench for the generated TokenMatcher Verilog (driven by tests/test_cocotb_matcher).

Each call's configuration, packed guide beats and golden map come in through
:func:`sim.runner.tb_params`. One loop drives the guide with random idle cycles and the map
with random backpressure: inputs change after the falling edge, ``valid``/``ready`` are
sampled in the read-only phase, so a transfer is exactly what the next rising edge commits.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from sim.runner import tb_params


class TB:
    """Clock, reset and the per-cycle guide driver / map monitor of one TokenMatcher."""

    def __init__(self, dut, params):
        self.dut = dut
        self.P = params
        self.rng = random.Random(params["seed"])
        self.ib = params["idx_bits"]
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self):
        d = self.dut
        d.rst.value = 1
        d.start.value = 0
        d.guide__valid.value = 0
        d.map__ready.value = 0
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0

    def unpack_map(self, v):
        ib = self.ib
        return [v & 3, (v >> 2) & ((1 << ib) - 1), (v >> (2 + ib)) & ((1 << ib) - 1)]

    async def call(self, call):
        d = self.dut
        idle, bp = self.P["idle"], self.P["backpressure"]
        await FallingEdge(d.clk)
        d.cfg.value = call["cfg"]
        d.start.value = 1
        await FallingEdge(d.clk)
        d.start.value = 0
        beats = call["beats"]
        bi, cycles, got = 0, 0, []
        while True:
            gv = bi < len(beats) and self.rng.random() >= idle
            d.guide__valid.value = int(gv)
            if gv:
                d.guide__payload.value = beats[bi]
            mr = self.rng.random() >= bp
            d.map__ready.value = int(mr)
            await ReadOnly()
            g_ready = int(d.guide__ready.value)
            m_valid = int(d.map__valid.value)
            m_pl = int(d.map__payload.value)
            busy = int(d.busy.value)
            if not busy:
                break
            if gv and g_ready:
                bi += 1
            if m_valid and mr:
                got.append(self.unpack_map(m_pl))
            cycles += 1
            assert cycles < self.P["max_cycles"], "matcher call did not finish"
            await FallingEdge(d.clk)
        return got, bi, int(d.r.value), int(d.error.value), int(d.cyc_total.value)


@cocotb.test()
async def matcher_calls(dut):
    """Every call's map equals the golden model's, with idle and backpressure."""
    P = tb_params()
    tb = TB(dut, P)
    await tb.reset()
    for k, call in enumerate(P["calls"]):
        got, beats_taken, r, error, cycles = await tb.call(call)
        dut._log.info(f"call {k}: {len(got)} map beats, r={r}, cycles={cycles}")
        assert error == 0, f"call {k}: error flagged"
        assert beats_taken == len(call["beats"]), f"call {k}: guide beats taken"
        assert got == call["map"], f"call {k}: map differs from golden"
        assert r == call["r"], f"call {k}: r {r} != {call['r']}"
