"""The board top's logic with the REAL token-reduction unit (``make_core(params, "tru")``) in
the Amaranth simulator, driven by the host's own code (:func:`fpga.host.run_reduction` over
:class:`fpga.protocol.Link`) through a simulated serial line (:class:`fpga.simline.SimLine`).

Every result of a call (map, reduced, restored, ``r``, ``max_abs``, beat counts) is checked
bit-exact against the golden model, at a tiny configuration (the iCEBreaker's parameters with
``N_max = 16``, ``D = 8``; grid 2x2x4) so the whole UART-level simulation stays under a
minute.
"""

import os

import numpy as np
import pytest

import golden as G
from fpga import host
from fpga import protocol as proto
from fpga.boards import BOARDS
from fpga.link import LinkTop, make_core
from fpga.simline import SimLine
from fpga.tru import TruCore
from hw.params import ParamError

SEED = int(os.environ.get("ORBIS_SEED", "20250611"))
DIVISOR = 4
MAX_PAYLOAD = 128
# The iCEBreaker's configuration (ice40-small with the board's overrides), shrunk further.
PARAMS = BOARDS["icebreaker"].params(N_max=16, D=8)


@pytest.fixture(scope="module")
def board():
    print(f"seed {SEED}")
    top = LinkTop(PARAMS, core=make_core(PARAMS, "tru"), divisor=DIVISOR,
                  max_payload=MAX_PAYLOAD, clk_hz=1_000_000, baud=1_000_000 // DIVISOR)
    line = SimLine(top, divisor=DIVISOR, seed=SEED)
    link = proto.Link(line, retries=50)
    link.get_info()
    yield top, line, link
    line.close()


def test_info_registers(board):
    top, line, link = board
    i = link.info
    assert (i.core_id, i.n_status, i.N_max, i.D, i.B, i.L, i.Dx, i.Wx, i.Lx, i.R) == (
        proto.CORE_TRU, len(proto.STATUS_TRU), PARAMS.N_max, PARAMS.D, PARAMS.B, PARAMS.L,
        PARAMS.Dx, PARAMS.Wx, PARAMS.Lx, PARAMS.R)
    link.reset()
    # Configuration registers read back as the unit's field widths store them.
    cb = PARAMS.count_bits
    vals = {"F": 0xFFFF_FFFF, "H": 3, "W": 4, "WINDOW": 0x1F_0102 | 0xE0 << 8, "MODE": 3,
            "R": 5, "TAU": 1234, "SHIFT": 0x3F, "SEED": 0x1_ABCD, "ROUNDS": 0x1F,
            "QUOTA": 2, "FLAGS": 0xFF}
    link.write_regs(vals)
    want = [(1 << cb) - 1, 3, 4, 0x1F_0102, 1, 5, 1234, 0x1F, 0xABCD, 0xF, 2, 0, 1, 0]
    got = link.read_regs(["F", "H", "W", "WINDOW", "MODE", "R", "TAU", "SHIFT", "SEED",
                          "ROUNDS", "QUOTA", "MERGE", "FLAGS", "CTRL"])
    assert got == want
    st = link.status()
    assert list(st) == list(proto.STATUS_TRU)
    assert st["CORE_ID"] == proto.CORE_TRU and st["FLAGS"] == 0 and st["RUNS"] == 0


def test_host_run_reduction(board):
    """The CLI's reduction routine: RUN, GUIDE, poll, CALL, X, Y, MAP, all vs golden."""
    top, line, link = board
    logs = []
    s = host.run_reduction(link, grid=(2, 2, 4), seed=SEED, source="video", ratio=0.5,
                           log=logs.append)
    print("\n".join(logs))
    print(s)
    assert s["ok"], s
    assert s["checked"] == ["map", "reduced", "restored", "status"]
    assert s["r"] > 0 and s["n_kept"] == 16 - s["r"]
    assert s["status"]["CYC_MATCH"] > 0 and s["status"]["CYC_CALL"] > 0
    assert line.framing_errors == 0


def test_reuse_and_errors(board):
    """A call that reuses the front map on new x; a bad configuration; a call without a map.

    Expected values come from the golden model; the error flags from the unit's contract.
    """
    top, line, link = board
    rng = np.random.default_rng(SEED + 1)
    p = PARAMS
    grid = G.Grid(1, 2, 4, window=(1, 2, 2))
    g = rng.integers(-3000, 3000, (grid.N, p.D)).astype(np.int16)
    g[5] = g[1]                                          # an exact tie
    shift = G.shift_for(g, p.B)
    res = G.match(g, grid, r=3, R=p.R, quota=1, seed=77, shift=shift, **p.golden_kwargs())
    link.reset()
    link.write_regs({"F": 1, "H": 2, "W": 4, "WINDOW": 1 | 2 << 8 | 2 << 16, "MODE": 0,
                     "R": 3, "SHIFT": shift, "SEED": 77, "ROUNDS": p.R, "QUOTA": 1})
    link.run()
    link.load_guide(g)
    st = host.wait_idle(link, proto.FLAG_MATCH_BUSY)
    assert st["FLAGS"] == proto.FLAG_FRESH and st["MAX_ABS"] == res.max_abs
    lim = 1 << (p.Wx - 1)
    for k, reuse in enumerate((False, True)):
        x = rng.integers(-lim, lim, (grid.N, p.Dx))
        link.control(proto.CTRL_CALL | (proto.CTRL_REUSE if reuse else 0))
        red = link.stream_x(x, res.n_kept)
        assert np.array_equal(red, G.merge(x, res, p.merge_mode)), k
        y = host.attention_standin(red)
        assert np.array_equal(link.stream_y(y, grid.N), G.unmerge(y, res)), k
        st = host.wait_idle(link, proto.FLAG_BUSY)
        assert st["R"] == res.r and st["N_TOKENS"] == grid.N and st["FLAGS"] == 0
    # No fresh map and no reuse: the call is refused (call error), nothing streams.
    link.control(proto.CTRL_CALL)
    st = host.wait_idle(link, proto.FLAG_BUSY)
    assert st["FLAGS"] >> proto.FLAG_CALL_ERROR_SHIFT & 3 == 1
    # A window stride of 0 is rejected at RUN (MatcherError.WINDOW = 2), no guide taken.
    link.write_regs({"WINDOW": 0})
    link.run()
    st = link.status()
    assert st["FLAGS"] & proto.FLAG_MATCH_ERROR
    assert st["FLAGS"] >> proto.FLAG_ERROR_CODE_SHIFT & 7 == 2
    assert st["RUNS"] == 2
    # The front map is still there and reads out.
    link.control(proto.CTRL_MAP_READ)
    kind, target, pos = link.read_map(grid.N)
    assert (kind == res.kind).all() and (target == res.target).all() and (pos == res.pos).all()
    assert link.status()["MAP_ENTRIES"] == grid.N


def test_tru_core_params():
    with pytest.raises(ParamError, match="count_bits"):
        TruCore(PARAMS, count_bits=0)
    with pytest.raises(ParamError, match="core must be one of"):
        make_core(PARAMS, "nope")
