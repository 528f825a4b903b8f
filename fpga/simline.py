"""A simulated serial line into a board top's logic, for tests without a board.

:class:`SimLine` is a transport of :class:`fpga.protocol.Link` (``write``/``read``) that runs
an Amaranth simulation of a :class:`fpga.link.LinkTop`: bytes the host writes are shifted
into ``rx`` as 8N1 frames, bytes on ``tx`` are decoded back. The host's own protocol code
therefore talks to the RTL unchanged (``tests/test_fpga_link.py``, ``tests/test_fpga_tru.py``).
"""

from __future__ import annotations

import random
from collections import deque

from amaranth.hdl import Signal
from amaranth.sim import Simulator

__all__ = ["SimLine"]


class SimLine:
    """A serial line into a simulated :class:`fpga.link.LinkTop`.

    ``write`` queues bytes that a testbench shifts into ``rx`` (8N1, random idle between
    bytes, shorter than the link's timeout); a second testbench decodes ``tx``. ``read`` runs
    the simulation until the bytes are there or a cycle budget is spent.

    Parameters
    ----------
    top : LinkTop
    divisor : int
        Clock cycles per bit (the top's UART divisor).
    seed : int
        Seed of the random idle gaps between bytes.
    budget : int
        Cycles ``read`` simulates at most before it gives up (a timeout in simulated time).
    gap_max : int or None
        Longest idle gap between bytes (default 8 bit times).
    gap_prob : float
        Probability of an idle gap after a byte.
    """

    simulated = True

    def __init__(self, top, *, divisor, seed, budget=400_000, gap_max=None, gap_prob=0.2):
        self.top, self.div = top, divisor
        self.rng = random.Random(seed)
        self.to_dev, self.from_dev = deque(), deque()
        self.gap_max = gap_max if gap_max is not None else 8 * divisor
        self.gap_prob = gap_prob
        self.budget = budget
        self.cycles = 0
        self.framing_errors = 0
        self.stopping = False
        self._stop = Signal()
        self.sim = Simulator(top)
        self.sim.add_clock(1e-6)
        self.sim.add_testbench(self._drive, background=True)
        self.sim.add_testbench(self._monitor, background=True)

    async def _drive(self, ctx):
        ctx.set(self.top.rx, 1)
        while True:
            if self.stopping:
                ctx.set(self._stop, 1)
                return
            if not self.to_dev:
                await ctx.tick().repeat(self.div)
                continue
            byte = self.to_dev.popleft()
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(self.top.rx, bit)
                await ctx.tick().repeat(self.div)
            if self.rng.random() < self.gap_prob:
                await ctx.tick().repeat(self.rng.randint(1, self.gap_max))

    async def _monitor(self, ctx):
        tx = self.top.tx
        while True:
            await ctx.tick().until((tx == 0) | self._stop)
            if ctx.get(self._stop):
                return
            await ctx.tick().repeat(self.div // 2)
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(self.div)
                byte |= ctx.get(tx) << i
            await ctx.tick().repeat(self.div)
            if not ctx.get(tx):
                self.framing_errors += 1
            self.from_dev.append(byte)

    def run(self, cycles):
        self.cycles += cycles
        self.sim.run_until(self.cycles * 1e-6)

    def write(self, data):
        self.to_dev.extend(data)

    def read(self, n, timeout=None):
        spent = 0
        while len(self.from_dev) < n and spent < self.budget:
            self.run(10 * self.div)
            spent += 10 * self.div
        return bytes(self.from_dev.popleft() for _ in range(min(n, len(self.from_dev))))

    def close(self):
        """End both testbenches, so no coroutine is left suspended."""
        self.stopping = True
        self.run(4 * self.div)

    def quiet(self, cycles):
        """Let the line idle (the link's timeout runs)."""
        self.run(cycles)
