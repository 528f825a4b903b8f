# amaranth: UnusedElaboratable=no
"""Reference MAC array: a small array computes matrix products equal to NumPy's."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.params import ParamError
from hw.refarray import PE, ReferenceArray


def _wrap(x, bits):
    x = np.asarray(x, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def _run(dut, products, seed, idle):
    """Feed each (A, B) as back-to-back products with random idle beats; read every C."""
    rng = random.Random(seed)
    got = []

    async def bench(ctx):
        for A, B in products:
            K = A.shape[1]
            for k in range(K):
                while idle and rng.random() < 0.3:
                    ctx.set(dut.valid, 0)
                    await ctx.tick()
                for i in range(dut.rows):
                    ctx.set(dut.a[i], int(A[i, k]))
                for j in range(dut.cols):
                    ctx.set(dut.b[j], int(B[k, j]))
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, int(k == 0))
                await ctx.tick()
            ctx.set(dut.valid, 0)
            ctx.set(dut.first, 0)
            await ctx.tick().repeat(dut.latency)
            got.append(np.array([[ctx.get(dut.acc[i][j]) for j in range(dut.cols)]
                                 for i in range(dut.rows)], dtype=np.int64))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("rows,cols,idle", [(3, 4, False), (3, 4, True), (1, 1, True),
                                            (4, 2, True)])
def test_matrix_product_matches_numpy(rows, cols, idle):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    dut = ReferenceArray(rows=rows, cols=cols, a_bits=8, b_bits=8, acc_bits=32)
    products = []
    for K in (5, 1, 7):
        A = rng.integers(-128, 128, size=(rows, K))
        B = rng.integers(-128, 128, size=(K, cols))
        products.append((A, B))
    # Edge case: extreme operands, every product is +16384 or -16256.
    K = 6
    products.append((np.full((rows, K), -128), np.tile([[-128], [127]], (K // 2, cols))))
    got = _run(dut, products, seed, idle)
    for (A, B), C in zip(products, got):
        np.testing.assert_array_equal(C, A.astype(np.int64) @ B.astype(np.int64))


def test_accumulator_wraps():
    # 12-bit accumulator: sums leave the range and must wrap like two's complement.
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    dut = ReferenceArray(rows=2, cols=2, a_bits=4, b_bits=4, acc_bits=8)
    A = rng.integers(-8, 8, size=(2, 9))
    B = rng.integers(-8, 8, size=(9, 2))
    (C,) = _run(dut, [(A, B)], seed, idle=False)
    np.testing.assert_array_equal(C, _wrap(A @ B, 8))


def test_unit_counts_cover_the_array():
    arr = ReferenceArray(rows=5, cols=3)
    units = arr.unit_counts()
    assert units["pe"][1] == 15
    assert units["skew"][1] == 5 * 4 // 2 + 3 * 2 // 2
    assert arr.macs_per_cycle() == 15


@pytest.mark.parametrize("kw", [dict(rows=0), dict(cols=300), dict(a_bits=1),
                                dict(acc_bits=10), dict(rows=True)])
def test_bad_parameters(kw):
    with pytest.raises(ParamError):
        ReferenceArray(**kw)


def test_pe_bad_accumulator():
    with pytest.raises(ParamError, match="acc_bits"):
        PE(a_bits=8, b_bits=8, acc_bits=15)
