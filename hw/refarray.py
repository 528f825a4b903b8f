"""Reference compute array: an output-stationary systolic int8 MAC array.

This block is *not* part of the token-reduction unit. It stands for the host accelerator's
compute array so that ``make synth`` can state the unit's area as a share of the whole
(DESIGN.md section 5), and so that the hiding analysis has a throughput to compare against.
It is synthesised by ``tools.synth`` the same way as the unit's blocks: one :class:`PE` and one
:class:`SkewStage` are synthesised and scaled by :meth:`ReferenceArray.unit_counts`.

Organisation (output stationary)
    ``rows x cols`` processing elements. Row ``i`` of ``A`` (``M x K``) enters PE ``(i, 0)``
    and moves right one PE per cycle; column ``j`` of ``B`` (``K x N``) enters PE ``(0, j)`` and
    moves down. PE ``(i, j)`` accumulates ``C[i, j] = sum_k A[i, k] * B[k, j]`` in its own
    accumulator. The input skew (row ``i`` delayed ``i`` cycles, column ``j`` delayed ``j``
    cycles) is inside the array, built from :class:`SkewStage` registers, so a caller presents
    column ``k`` of ``A`` and row ``k`` of ``B`` in the same beat.

What is counted as the array's area
    The PEs (an ``a_bits x b_bits`` signed multiplier, an ``acc_bits`` accumulator adder, the
    accumulator and the two forwarding registers with their valid/first flags) and the skew
    registers. Not counted: operand/result SRAM buffers, the result drain network, the
    softmax/vector units and the host's control. Leaving these out makes the array smaller
    and therefore the token-reduction unit's share *larger* (a conservative share).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import ParamError

__all__ = ["PE", "SkewStage", "ReferenceArray"]


def _check_width(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ParamError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
    return v


def _check_pe(a_bits, b_bits, acc_bits):
    _check_width("a_bits", a_bits, 2, 32)
    _check_width("b_bits", b_bits, 2, 32)
    _check_width("acc_bits", acc_bits, a_bits + b_bits, 64)
    return a_bits, b_bits, acc_bits


class PE(wiring.Component):
    """Multiply-accumulate one operand pair per cycle and forward both operands.

    Parameters
    ----------
    a_bits, b_bits : int
        Signed operand widths (2..32).
    acc_bits : int
        Signed accumulator width; must hold one product (``>= a_bits + b_bits``).

    Members
    -------
    a_i, b_i : In(signed)
        Operands arriving from the left and from above.
    valid_i, first_i : In(1)
        ``valid_i`` qualifies the operands; ``first_i`` (with ``valid_i``) starts a new sum:
        the accumulator loads the product instead of adding it. Both travel with ``a``.
    a_o, b_o, valid_o, first_o : Out
        The inputs, registered one cycle (to the right / below).
    acc : Out(signed(acc_bits))
        The running sum, wrapping modulo ``2**acc_bits``.
    """

    def __init__(self, *, a_bits: int = 8, b_bits: int = 8, acc_bits: int = 32):
        self._a_bits, self._b_bits, self._acc_bits = _check_pe(a_bits, b_bits, acc_bits)
        super().__init__({
            "a_i": In(signed(a_bits)), "b_i": In(signed(b_bits)),
            "valid_i": In(1), "first_i": In(1),
            "a_o": Out(signed(a_bits)), "b_o": Out(signed(b_bits)),
            "valid_o": Out(1), "first_o": Out(1),
            "acc": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [
            self.a_o.eq(self.a_i), self.b_o.eq(self.b_i),
            self.valid_o.eq(self.valid_i), self.first_o.eq(self.first_i),
        ]
        prod = Signal(signed(self._a_bits + self._b_bits))
        m.d.comb += prod.eq(self.a_i * self.b_i)
        with m.If(self.valid_i):
            with m.If(self.first_i):
                m.d.sync += self.acc.eq(prod)
            with m.Else():
                m.d.sync += self.acc.eq(self.acc + prod)
        return m


class SkewStage(wiring.Component):
    """Delay an operand and its ``valid``/``first`` flags by one cycle (a skew register).

    Parameters
    ----------
    bits : int
        Signed operand width.
    """

    def __init__(self, *, bits: int = 8):
        self._bits = _check_width("bits", bits, 2, 32)
        super().__init__({
            "d_i": In(signed(bits)), "valid_i": In(1), "first_i": In(1),
            "d_o": Out(signed(bits)), "valid_o": Out(1), "first_o": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.d_o.eq(self.d_i), self.valid_o.eq(self.valid_i),
                     self.first_o.eq(self.first_i)]
        return m


class ReferenceArray(wiring.Component):
    """Output-stationary ``rows x cols`` systolic MAC array with built-in input skew.

    One beat carries column ``k`` of ``A`` (``rows`` values) and row ``k`` of ``B`` (``cols``
    values). A product ``A @ B`` of inner size ``K`` is ``K`` beats with ``first`` set on the
    first; ``C[i, j]`` is final in ``acc[i][j]`` :attr:`latency` cycles after the last beat
    (``i + j`` skew plus the PE register). Beats may have gaps (``valid`` low).

    Parameters
    ----------
    rows, cols : int
        Array size (1..256 each).
    a_bits, b_bits, acc_bits : int
        Operand and accumulator widths, as for :class:`PE`.

    Members
    -------
    a : In(ArrayLayout(signed(a_bits), rows))
        Column ``k`` of ``A``.
    b : In(ArrayLayout(signed(b_bits), cols))
        Row ``k`` of ``B``.
    valid, first : In(1)
        Beat valid; first beat of a product (clears the accumulators as it passes).
    acc : Out(ArrayLayout(ArrayLayout(signed(acc_bits), cols), rows))
        ``acc[i][j]`` is PE ``(i, j)``'s accumulator.
    """

    def __init__(self, *, rows: int = 4, cols: int = 4, a_bits: int = 8, b_bits: int = 8,
                 acc_bits: int = 32):
        self._rows = _check_width("rows", rows, 1, 256)
        self._cols = _check_width("cols", cols, 1, 256)
        self._a_bits, self._b_bits, self._acc_bits = _check_pe(a_bits, b_bits, acc_bits)
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_bits), rows)),
            "b": In(data.ArrayLayout(signed(b_bits), cols)),
            "valid": In(1), "first": In(1),
            "acc": Out(data.ArrayLayout(data.ArrayLayout(signed(acc_bits), cols), rows)),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)

    @property
    def latency(self) -> int:
        """Cycles from the last beat until every ``acc[i][j]`` holds its final sum."""
        return (self._rows - 1) + (self._cols - 1) + 1

    def macs_per_cycle(self) -> int:
        return self._rows * self._cols

    def unit_counts(self) -> dict:
        """Repeated units and their counts: ``{name: (factory, count)}``.

        ``factory()`` builds the unit's component. The array is exactly these instances plus
        wiring, so its area is the sum of ``count x area(unit)``; ``tools.synth`` uses this
        to synthesise one of each instead of the whole array.
        """
        skew_a = self._rows * (self._rows - 1) // 2
        skew_b = self._cols * (self._cols - 1) // 2
        a, b, acc = self._a_bits, self._b_bits, self._acc_bits
        units = {"pe": (lambda: PE(a_bits=a, b_bits=b, acc_bits=acc), self._rows * self._cols)}
        if a == b:
            units["skew"] = (lambda: SkewStage(bits=a), skew_a + skew_b)
        else:
            units["skew_a"] = (lambda: SkewStage(bits=a), skew_a)
            units["skew_b"] = (lambda: SkewStage(bits=b), skew_b)
        return {k: v for k, v in units.items() if v[1] > 0}

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        def skew(name, value, valid, first, depth, bits):
            # A chain of `depth` one-cycle stages; valid/first travel with the operand.
            for s in range(depth):
                st = SkewStage(bits=bits)
                m.submodules[f"{name}_{s}"] = st
                m.d.comb += [st.d_i.eq(value), st.valid_i.eq(valid), st.first_i.eq(first)]
                value, valid, first = st.d_o, st.valid_o, st.first_o
            return value, valid, first

        a_in = [skew(f"skew_a{i}", self.a[i], self.valid, self.first, i, self._a_bits)
                for i in range(R)]
        b_in = [skew(f"skew_b{j}", self.b[j], 0, 0, j, self._b_bits)[0] for j in range(C)]

        pes = [[None] * C for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = PE(a_bits=self._a_bits, b_bits=self._b_bits, acc_bits=self._acc_bits)
                m.submodules[f"pe_{i}_{j}"] = pes[i][j] = pe
                if j == 0:
                    a, v, f = a_in[i]
                else:
                    left = pes[i][j - 1]
                    a, v, f = left.a_o, left.valid_o, left.first_o
                b = b_in[j] if i == 0 else pes[i - 1][j].b_o
                m.d.comb += [pe.a_i.eq(a), pe.b_i.eq(b), pe.valid_i.eq(v), pe.first_i.eq(f),
                             self.acc[i][j].eq(pe.acc)]
        return m
