"""Reference compute array: an output-stationary systolic MAC array (int8 or bf16).

This block is *not* part of the token-reduction unit. It stands for the host accelerator's
compute array so that ``make synth`` can state the unit's area as a share of the whole
(DESIGN.md section 5), and so that the hiding analysis has a throughput to compare against.
It is synthesised by ``tools.synth`` the same way as the unit's blocks: one PE and one
:class:`SkewStage` are synthesised and scaled by :meth:`ReferenceArray.unit_counts`.

Two kinds of PE
    ``kind="int8"`` (:class:`PE`): signed integer multiply, wrapping integer accumulator
    (int8 x int8 into 32 bits by default). ``kind="bf16"`` (:class:`BF16PE`): bf16 x bf16
    multiply, fp32 accumulate, the number format video diffusion transformers (CogVideoX)
    run inference in. The bf16 PE is deliberately a *minimal* floating-point MAC (flush to
    zero, round toward zero, no NaN/Inf handling, see its docstring): a smaller PE makes the
    array smaller and the token-reduction unit's share larger, so the share stays
    conservative.

Organisation (output stationary)
    ``rows x cols`` processing elements. Row ``i`` of ``A`` (``M x K``) enters PE ``(i, 0)``
    and moves right one PE per cycle; column ``j`` of ``B`` (``K x N``) enters PE ``(0, j)`` and
    moves down. PE ``(i, j)`` accumulates ``C[i, j] = sum_k A[i, k] * B[k, j]`` in its own
    accumulator. The input skew (row ``i`` delayed ``i`` cycles, column ``j`` delayed ``j``
    cycles) is inside the array, built from :class:`SkewStage` registers, so a caller presents
    column ``k`` of ``A`` and row ``k`` of ``B`` in the same beat.

What is counted as the array's area
    The PEs (for int8 an ``a_bits x b_bits`` signed multiplier and an ``acc_bits``
    accumulator adder; for bf16 an 8 x 8 significand multiplier and an fp32 adder; in both
    the accumulator and the two forwarding registers with their valid/first flags) and the
    skew registers. Not counted: operand/result SRAM buffers, the result drain network, the
    softmax/vector units and the host's control. Leaving these out makes the array smaller
    and therefore the token-reduction unit's share *larger* (a conservative share).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import ParamError

__all__ = ["PE", "BF16PE", "SkewStage", "ReferenceArray", "KINDS"]

# PE kinds of the reference array.
KINDS = ("int8", "bf16")


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


# fp32 constants (IEEE 754 binary32; bf16 is its upper half).
_F32_MAX = 0x7F7F_FFFF          # largest finite magnitude (exponent 254, mantissa all ones)
_GUARD = 1                      # guard bits kept below the larger addend's last place


def _fp32_pack(m, name, sign, exp, sig, zero):
    """A 32-bit pattern from a sign, a *signed* biased exponent and a 24-bit significand.

    ``sig`` has its leading one at bit 23 unless ``zero``. Exponents below 1 (subnormal or
    smaller) flush to +0; exponents above 254 saturate to the largest finite magnitude, which
    is what round-toward-zero gives on overflow.
    """
    out = Signal(32, name=name)
    with m.If(zero | (exp < 1)):
        m.d.comb += out.eq(0)
    with m.Elif(exp > 254):
        m.d.comb += out.eq(Cat(Const(_F32_MAX, 31), sign))
    with m.Else():
        m.d.comb += out.eq(Cat(sig[:23], exp[:8], sign))
    return out


class BF16PE(wiring.Component):
    """bf16 x bf16 multiply, fp32 accumulate: one MAC per cycle, operands forwarded.

    Operands and accumulator are raw IEEE bit patterns (bf16: sign, 8-bit exponent, 7-bit
    mantissa; fp32: sign, 8-bit exponent, 23-bit mantissa; both with bias 127). The arithmetic
    is a deliberately minimal floating-point MAC, of the kind ML accelerators use (no
    subnormals, truncating alignment and rounding), because a smaller PE keeps the
    token-reduction unit's area share conservative. Exactly:

    Decoding (both the bf16 operands and the fp32 adder inputs)
        A pattern with exponent field 0 reads as zero (subnormals flushed, sign ignored).
        Exponent 255 (IEEE Inf/NaN) is *not* special: it reads as the finite number
        ``(-1)^s * 1.m * 2**128``. There is no NaN propagation and no Inf is ever produced.

    Product
        The 8-bit significands ``1.m_a * 1.m_b`` multiply exactly (16 bits, so the product is
        exact in fp32) and the exponents add. If either operand is zero the product is +0.
        A product whose fp32 exponent would be below the normal range (< 2**-126) flushes to
        +0; one above it (>= 2**128) saturates to ``+/-0x7F7FFFFF`` (largest finite).

    Accumulation: ``acc + product`` with one fp32 adder
        1. The addend of larger magnitude (``big``; comparing the 31-bit patterns) keeps its
           24-bit significand; the other (``small``) is shifted right by the exponent
           difference into a field with one guard bit below ``big``'s last place. Bits
           shifted out beyond the guard bit are discarded (plain truncation, no sticky bit).
        2. The significands are added (equal signs) or subtracted (``big - small``, never
           negative); the result takes ``big``'s sign.
        3. Normalisation: a leading-zero count over the 26-bit sum and a left shift; the
           significand is then truncated to 24 bits, i.e. rounded toward zero.
        4. An exact zero sum (cancellation) is +0. Results below 2**-126 flush to +0; results
           of 2**128 or more saturate to ``+/-0x7F7FFFFF`` (round toward zero's overflow
           value).
        So the sum is ``RZ(big +/- trunc(small))``, where ``trunc`` drops ``small``'s bits
        below ``2**(e_big - 24)`` (``e_big`` is big's unbiased exponent). With the guard bit a
        subtraction of operands within a factor 2 is exact, and each addition's relative error
        is below ``2**-22`` (two units in the last place: one from truncating ``small``, one
        from rounding toward zero).

    Parameters
    ----------
    None: the widths are fixed (16-bit operands, 32-bit accumulator).

    Members
    -------
    a_i, b_i : In(16)
        bf16 operand patterns arriving from the left and from above.
    valid_i, first_i : In(1)
        As for :class:`PE`: ``first_i`` (with ``valid_i``) loads the product into the
        accumulator instead of adding it.
    a_o, b_o, valid_o, first_o : Out
        The inputs, registered one cycle (to the right / below).
    acc : Out(32)
        The running fp32 sum (its pattern). Reset value 0 (+0.0).

    The multiplier and adder are combinational between the operand inputs and ``acc`` (one
    MAC per cycle, latency 1 like :class:`PE`); the PE is synthesised for area, not timed.
    """

    OPERAND_BITS = 16
    ACC_BITS = 32

    def __init__(self):
        super().__init__({
            "a_i": In(16), "b_i": In(16),
            "valid_i": In(1), "first_i": In(1),
            "a_o": Out(16), "b_o": Out(16),
            "valid_o": Out(1), "first_o": Out(1),
            "acc": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [
            self.a_o.eq(self.a_i), self.b_o.eq(self.b_i),
            self.valid_o.eq(self.valid_i), self.first_o.eq(self.first_i),
        ]
        prod = self._multiply(m, self.a_i, self.b_i)
        total = self._add(m, self.acc, prod)
        with m.If(self.valid_i):
            m.d.sync += self.acc.eq(Mux(self.first_i, prod, total))
        return m

    @staticmethod
    def _multiply(m, a, b):
        """fp32 pattern of the exact product of two bf16 patterns (flushed / saturated)."""
        ea, eb = a[7:15], b[7:15]
        p = Signal(16)                  # 1.xxxxxxx * 1.xxxxxxx = 01.x..x or 1x.x..x (2**14..)
        m.d.comb += p.eq(Cat(a[:7], 1) * Cat(b[:7], 1))
        carry = p[15]                   # product >= 2: one more in the exponent
        exp = Signal(signed(11))        # biased fp32 exponent, may leave 1..254
        m.d.comb += exp.eq(ea + eb - 127 + carry)
        # Leading one to bit 23; the low 8 (or 9) significand bits are zero: exact in fp32.
        sig = Mux(carry, Cat(Const(0, 8), p), Cat(Const(0, 9), p[:15]))
        return _fp32_pack(m, "prod", a[15] ^ b[15], exp, sig,
                          zero=(ea == 0) | (eb == 0))

    @staticmethod
    def _add(m, x, y):
        """fp32 pattern of ``x + y`` as described in the class docstring."""
        x_big = x[:31] >= y[:31]        # magnitude order = order of the 31-bit patterns
        big, small = Signal(32), Signal(32)
        m.d.comb += [big.eq(Mux(x_big, x, y)), small.eq(Mux(x_big, y, x))]
        e_big, e_small = big[23:31], small[23:31]

        def significand(v, e):          # 1.m with the guard bit below; zero if exponent 0
            return Mux(e == 0, 0, Cat(Const(0, _GUARD), v[:23], 1))

        d = Signal(8)                   # exponent difference, >= 0 since |big| >= |small|
        m.d.comb += d.eq(e_big - e_small)
        # small >> d, truncated. Everything is shifted out from d = 24 + _GUARD on, so a 5-bit
        # shifter suffices; the Mux covers the larger d (where d[:5] would wrap).
        aligned = Signal(24 + _GUARD)
        m.d.comb += aligned.eq(Mux(d > 24 + _GUARD, 0, significand(small, e_small) >> d[:5]))
        s = Signal(25 + _GUARD)         # sum with carry, or a non-negative difference
        with m.If(big[31] ^ small[31]):
            m.d.comb += s.eq(significand(big, e_big) - aligned)
        with m.Else():
            m.d.comb += s.eq(significand(big, e_big) + aligned)

        # Leading-zero count: the last matching assignment (the highest set bit) wins.
        lz = Signal(range(len(s) + 1))
        m.d.comb += lz.eq(len(s))
        for i in range(len(s)):
            with m.If(s[i]):
                m.d.comb += lz.eq(len(s) - 1 - i)
        norm = Signal(len(s))           # leading one at the top bit
        m.d.comb += norm.eq(s << lz)
        exp = Signal(signed(10))        # the top bit of `s` has weight 2**(e_big + 1)
        m.d.comb += exp.eq(e_big + 1 - lz)
        # Truncating `norm` to its top 24 bits rounds toward zero.
        return _fp32_pack(m, "sum", big[31], exp, norm[len(s) - 24:], zero=(s == 0))


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
    kind : str
        ``"int8"`` (default): integer :class:`PE` elements. ``"bf16"``: :class:`BF16PE`
        elements (bf16 operands, fp32 accumulators, each ``acc[i][j]`` summed over ``k`` in
        order ``k = 0, 1, ...``).
    a_bits, b_bits, acc_bits : int, optional
        Operand and accumulator widths. For ``"int8"`` as for :class:`PE` (default 8, 8, 32;
        the name is the default, any signed widths work). For ``"bf16"`` the widths are fixed
        at 16, 16 and 32: leave them out (or pass exactly those values).

    Members
    -------
    a : In(ArrayLayout(signed(a_bits), rows))
        Column ``k`` of ``A`` (for bf16: ``unsigned(16)`` bit patterns).
    b : In(ArrayLayout(signed(b_bits), cols))
        Row ``k`` of ``B`` (for bf16: ``unsigned(16)`` bit patterns).
    valid, first : In(1)
        Beat valid; first beat of a product (clears the accumulators as it passes).
    acc : Out(ArrayLayout(ArrayLayout(signed(acc_bits), cols), rows))
        ``acc[i][j]`` is PE ``(i, j)``'s accumulator (for bf16: ``unsigned(32)`` fp32
        patterns).
    """

    def __init__(self, *, rows: int = 4, cols: int = 4, kind: str = "int8",
                 a_bits: int | None = None, b_bits: int | None = None,
                 acc_bits: int | None = None):
        self._rows = _check_width("rows", rows, 1, 256)
        self._cols = _check_width("cols", cols, 1, 256)
        if kind not in KINDS:
            raise ParamError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")
        self._kind = kind
        if kind == "bf16":
            fixed = dict(a_bits=BF16PE.OPERAND_BITS, b_bits=BF16PE.OPERAND_BITS,
                         acc_bits=BF16PE.ACC_BITS)
            for name, v in dict(a_bits=a_bits, b_bits=b_bits, acc_bits=acc_bits).items():
                if v is not None and v != fixed[name]:
                    raise ParamError(f"{name} is fixed at {fixed[name]} for kind='bf16' "
                                     f"(leave it out), not {v!r}")
            self._a_bits, self._b_bits, self._acc_bits = fixed.values()
            a_shape, b_shape, acc_shape = unsigned(16), unsigned(16), unsigned(32)
        else:
            self._a_bits, self._b_bits, self._acc_bits = _check_pe(
                8 if a_bits is None else a_bits, 8 if b_bits is None else b_bits,
                32 if acc_bits is None else acc_bits)
            a_shape, b_shape = signed(self._a_bits), signed(self._b_bits)
            acc_shape = signed(self._acc_bits)
        super().__init__({
            "a": In(data.ArrayLayout(a_shape, rows)),
            "b": In(data.ArrayLayout(b_shape, cols)),
            "valid": In(1), "first": In(1),
            "acc": Out(data.ArrayLayout(data.ArrayLayout(acc_shape, cols), rows)),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    kind = property(lambda self: self._kind)

    @property
    def latency(self) -> int:
        """Cycles from the last beat until every ``acc[i][j]`` holds its final sum."""
        return (self._rows - 1) + (self._cols - 1) + 1

    def macs_per_cycle(self) -> int:
        return self._rows * self._cols

    def unit_counts(self) -> dict:
        """Repeated units and their counts: ``{name: (factory, count)}``.

        ``factory()`` builds the unit's component (for ``kind="bf16"`` a :class:`BF16PE` and
        16-bit skew stages). The array is exactly these instances plus wiring, so its area is
        the sum of ``count x area(unit)``; ``tools.synth`` uses this to synthesise one of
        each instead of the whole array.
        """
        skew_a = self._rows * (self._rows - 1) // 2
        skew_b = self._cols * (self._cols - 1) // 2
        a, b = self._a_bits, self._b_bits
        units = {"pe": (self._new_pe, self._rows * self._cols)}
        if a == b:
            units["skew"] = (lambda: SkewStage(bits=a), skew_a + skew_b)
        else:
            units["skew_a"] = (lambda: SkewStage(bits=a), skew_a)
            units["skew_b"] = (lambda: SkewStage(bits=b), skew_b)
        return {k: v for k, v in units.items() if v[1] > 0}

    def _new_pe(self):
        if self._kind == "bf16":
            return BF16PE()
        return PE(a_bits=self._a_bits, b_bits=self._b_bits, acc_bits=self._acc_bits)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        def skew(name, value, valid, first, depth, bits):
            # A chain of `depth` one-cycle stages; valid/first travel with the operand. (For
            # bf16 the signed stage carries the raw pattern: only the bits matter.)
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
                pe = self._new_pe()
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
