"""8N1 UART receiver and transmitter with byte streams.

Both take the bit period in clock cycles (``divisor = clk_hz // baud``); the simulation test
runs them at a few clocks per bit.
"""


from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "check_divisor"]


def check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not 4 <= divisor <= 1 << 20:
        raise ValueError(f"divisor (clock cycles per bit) must be an integer in [4, 2**20], "
                         f"not {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """Receive 8N1 bytes from the ``rx`` pin.

    The pin goes through a two-flop synchroniser; each bit is sampled in its middle. A byte
    with a bad stop bit is dropped and counted in ``framing_error`` (a one-cycle pulse). The
    line has no flow control, so a byte not taken before the next one completes is replaced
    (``overrun`` pulses); the link always takes bytes at once.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1)
        The line, idle high.
    o : Out(stream.Signature(8))
        Received bytes.
    framing_error, overrun : Out(1)
        One-cycle pulses.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        count = Signal(range(div))
        bit = Signal(range(8))
        sr = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += count.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(rx):
                    m.next = "IDLE"            # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [count.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.sync += [sr.eq(Cat(sr[1:], rx)), count.eq(div - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(rx):
                    m.d.sync += [self.o.payload.eq(sr), self.o.valid.eq(1)]
                    m.d.comb += self.overrun.eq(self.o.valid & ~self.o.ready)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                # Wait for the line to return high before hunting for the next start bit.
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Transmit 8N1 bytes on the ``tx`` pin.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The line, idle high.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self._divisor = check_divisor(divisor)
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        count = Signal(range(div))
        bits = Signal(range(11))
        sr = Signal(10, init=0x3FF)

        m.d.comb += self.tx.eq(sr[0])
        with m.If(bits == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                # Start bit, data LSB first, stop bit.
                m.d.sync += [sr.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                             count.eq(div - 1)]
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.Else():
            m.d.sync += [sr.eq(Cat(sr[1:], 1)), bits.eq(bits - 1), count.eq(div - 1)]
        return m
