"""Host driver and command-line tool for an ORBIS board (pyserial).

``python -m fpga.host --port /dev/ttyUSB1 run`` loads real-video tokens (Big Buck Bunny from
:mod:`golden.video`; seeded random tokens when the clip or the module is missing), runs one
reduction on the board and checks every result (map, reduced x, restored y, and the status:
``r``, ``max_abs``, beat counts, flags) against the golden model, then prints a summary.

With the token-reduction unit the call order is (docs/fpga.md): configure, ``RUN``
(match_start), ``GUIDE``, poll ``STATUS`` until the match is done, ``CTRL_CALL``, ``X`` (the
reduced tokens come back), ``Y`` with ``y = attention_standin(reduced)`` (the restored tokens
come back), ``CTRL_MAP_READ``, ``MAP``. The protocol code is :mod:`fpga.protocol`; this
module adds the serial transport and the reduction routine, which the simulation test runs
unchanged over a simulated line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from . import protocol as proto

__all__ = ["SerialTransport", "run_reduction", "make_tokens", "attention_standin",
           "wait_idle", "CallFailed", "main"]


class SerialTransport:
    """:class:`fpga.protocol.Link` transport over a pyserial port."""

    simulated = False

    def __init__(self, port: str, baud: int):
        import serial  # pyserial; imported here so the protocol code works without it
        self.ser = serial.Serial(port, baud, timeout=0.1)
        self.ser.reset_input_buffer()

    def write(self, data: bytes):
        self.ser.write(data)
        self.ser.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self.ser.timeout = timeout
        return self.ser.read(n)

    def close(self):
        self.ser.close()


def make_tokens(info: proto.Info, grid, seed: int, source: str = "video", log=print,
                window=None):
    """Guide ``g`` (int16 ``(N, D)``), activations ``x`` and ``y`` for one call.

    ``source="video"`` cuts the grid from the Big Buck Bunny clip (:mod:`golden.video`),
    with the clip's next frame as ``x``; it falls back to seeded random tokens when the clip
    or the module is missing. Returns ``(g, x, y, source_used)``.
    """
    F, H, W = grid
    N = F * H * W
    rng = np.random.default_rng(seed)
    lim = (1 << (info.Wx - 1)) - 1
    g = x = None
    used = "random"
    if source == "video":
        try:
            from golden.video import video_tokens
            vt = video_tokens(F, H, W, D=info.D, window=window or info.window, seed=seed)
            g = vt.guide
            # Activations: the target features, scaled into Wx bits (guide-like statistics).
            t = vt.target[:, :info.Dx] if vt.target.shape[1] >= info.Dx else \
                np.resize(vt.target, (N, info.Dx))
            scale = lim / max(1e-9, float(np.abs(t).max()))
            x = np.clip(np.rint(t * scale), -lim, lim).astype(np.int64)
            used = "video"
        except (ImportError, FileNotFoundError, ValueError) as e:
            log(f"  real video unavailable ({e}); using seeded random tokens")
    if g is None:
        g = rng.integers(-20000, 20000, (N, info.D)).astype(np.int16)
        x = rng.integers(-lim, lim + 1, (N, info.Dx))
    y_seed = rng.integers(-lim, lim + 1, (N, info.Dx))
    return np.asarray(g, dtype=np.int16), np.asarray(x, dtype=np.int64), y_seed, used


def attention_standin(v):
    """What the host does between the reduced and the restored stream: bitwise not.

    A stand-in for the attention block that is element-wise and stays in ``Wx`` bits, so a
    restored token shows exactly which reduced token the unit copied (``tests/test_top.py``
    uses the same).
    """
    return -np.asarray(v, dtype=np.int64) - 1


def _expected(info, g, x, y_all, grid, window, *, r, seed, quota, shift):
    """Expected map, reduced, y sent, restored and status for this board's core."""
    import golden
    N = len(g)
    if info.core_id == proto.CORE_ECHO:
        # The stand-in core: identity map, x and y echoed.
        n = np.arange(N)
        kind = np.full(N, golden.KIND_KEPT)
        return dict(kind=kind, target=n, pos=n, reduced=x, y=y_all, restored=y_all,
                    max_abs=int(np.abs(g.astype(np.int64)).max()), n_kept=N)
    res = golden.match(g, golden.Grid(*grid, window=window), r=r, B=info.B, NB=info.NB,
                       hist_mant=info.hist_mant, R=info.R, quota=quota, seed=seed, shift=shift)
    mode = "replace" if info.merge_mode == 0 else "mean"
    reduced = golden.merge(x, res, mode)
    y = attention_standin(reduced)
    return dict(kind=res.kind, target=res.target, pos=res.pos, reduced=reduced, y=y,
                restored=golden.unmerge(y, res), max_abs=res.max_abs, n_kept=res.n_kept,
                r=res.r, shift=res.q_shift)


def wait_idle(link: proto.Link, mask: int, *, polls: int = 1000) -> dict:
    """Poll STATUS until none of the ``mask`` bits of ``FLAGS`` is set; return the status."""
    for _ in range(polls):
        st = link.status()
        if not st["FLAGS"] & mask:
            return st
    raise proto.ProtocolError(f"the unit stayed busy (FLAGS 0x{st['FLAGS']:x}, mask "
                              f"0x{mask:x}) for {polls} status polls")


class CallFailed(RuntimeError):
    """The unit reported an error flag during a call (bad configuration, no map)."""


def _call_tru(link, info, g, x, N, n_kept, log):
    """The real unit's call order: RUN, GUIDE, wait for the match, CALL, X, Y, MAP_READ, MAP.

    Returns ``(kind, target, pos, reduced, y, restored)``; ``y`` is what the host computed
    from the reduced stream and sent back.
    """
    log("run (match_start), then load the guide")
    link.run()
    # A configuration the matcher rejects is flagged at once and takes no guide beats.
    st = link.status()
    if st["FLAGS"] & proto.FLAG_MATCH_ERROR:
        code = (st["FLAGS"] >> proto.FLAG_ERROR_CODE_SHIFT) & 7
        raise CallFailed(f"the matcher rejected the configuration (MatcherError {code})")
    link.load_guide(g)
    st = wait_idle(link, proto.FLAG_MATCH_BUSY)
    if st["FLAGS"] & proto.FLAG_MATCH_ERROR:
        code = (st["FLAGS"] >> proto.FLAG_ERROR_CODE_SHIFT) & 7
        raise CallFailed(f"the matcher rejected the configuration (MatcherError {code})")
    log(f"matched in {st['CYC_MATCH']} cycles; call: stream x ({N} tokens in, "
        f"{n_kept} out)")
    link.control(proto.CTRL_CALL)
    reduced = link.stream_x(x, n_kept)
    y = attention_standin(reduced)
    log(f"stream y = attention stand-in(reduced) ({len(y)} tokens in, {N} out)")
    restored = link.stream_y(y, N)
    st = wait_idle(link, proto.FLAG_CALL_BUSY | proto.FLAG_MAP_BUSY)
    if st["FLAGS"] >> proto.FLAG_CALL_ERROR_SHIFT & 3:
        raise CallFailed(f"call error {st['FLAGS'] >> proto.FLAG_CALL_ERROR_SHIFT & 3}")
    link.control(proto.CTRL_MAP_READ)
    kind, target, pos = link.read_map(N)
    return kind, target, pos, reduced, y, restored


def run_reduction(link: proto.Link, *, grid=(2, 4, 4), seed: int = 1, source: str = "video",
                  ratio: float = 0.5, quota: int = 2, log=print) -> dict:
    """Run one reduction on the board behind ``link`` and check it; return a summary dict.

    The expected results come from the golden model (:mod:`golden`) for the token-reduction
    unit and from the stand-in's definition (identity map, echo) for the echo core. The two
    cores need different call orders (docs/fpga.md): the unit matches the guide after RUN and
    reduces/restores in a call started with ``CTRL_CALL``; the stand-in emits its map on RUN.
    """
    t0 = time.monotonic()
    info = link.get_info()
    F, H, W = grid
    N = F * H * W
    if N > info.N_max:
        raise ValueError(f"grid {grid} has {N} tokens, the board takes at most {info.N_max}")
    log(f"board: core {info.core_name}, N_max={info.N_max} D={info.D} B={info.B} "
        f"Dx={info.Dx} Wx={info.Wx}, frames of {info.max_payload} bytes")
    seed16 = (seed % 0xFFFF) + 1
    # A window never exceeds the grid (golden.Grid's rule).
    window = tuple(min(s, d) for s, d in zip(info.window, grid))
    g, x, y_all, used = make_tokens(info, grid, seed, source, log, window)
    log(f"tokens: {used}, grid {F}x{H}x{W} = {N} tokens")
    import golden
    shift = golden.shift_for(g, info.B)
    n_src = N - golden.window_count(golden.Grid(*grid, window=window))
    r = int(round(ratio * n_src))
    exp = _expected(info, g, x, y_all, grid, window, r=r, seed=seed16, quota=quota,
                    shift=shift)
    tru = info.core_id == proto.CORE_TRU

    link.reset()
    sf, sh, sw = window
    link.write_regs({"F": F, "H": H, "W": W, "WINDOW": sf | sh << 8 | sw << 16, "MODE": 0,
                     "R": r, "TAU": 0, "SHIFT": shift, "SEED": seed16, "ROUNDS": info.R,
                     "QUOTA": quota, "MERGE": info.merge_mode, "FLAGS": 0})
    log(f"config: r={r}, shift={shift}, rounds={info.R}, quota={quota}, seed={seed16}")
    error = None
    if tru:
        try:
            kind, target, pos, reduced, y, restored = _call_tru(link, info, g, x, N,
                                                                exp["n_kept"], log)
        except CallFailed as e:
            error = str(e)
            log(f"error: {e}")
            kind = target = pos = np.zeros(0, dtype=np.int64)
            reduced = restored = np.zeros((0, info.Dx), dtype=np.int64)
    else:
        log(f"load guide ({g.size * 2} bytes), run")
        link.load_guide(g)
        link.run()
        kind, target, pos = link.read_map(N)
        log(f"stream x ({N} tokens in, {exp['n_kept']} out)")
        reduced = link.stream_x(x, exp["n_kept"])
        log(f"stream y ({len(exp['y'])} tokens in, {N} out)")
        restored = link.stream_y(exp["y"], N)
    st = link.status()

    def differ(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return int((a != b).sum()) if a.shape == b.shape else max(a.size, b.size, 1)

    status_bad = int(st["MAX_ABS"] != exp["max_abs"]) + int(st["RUNS"] != 1)
    if tru:
        per_tok = info.Dx // info.Lx
        status_bad += (int(st["R"] != exp["r"]) + int(st["N_TOKENS"] != N)
                       + int(st["FLAGS"] != 0)
                       + int(st["GUIDE_BEATS"] != N * info.D // info.L)
                       + int(st["X_BEATS"] != N * per_tok)
                       + int(st["Y_BEATS"] != exp["n_kept"] * per_tok)
                       + int(st["MAP_ENTRIES"] != N))
    mism = {
        "map": differ(kind, exp["kind"]) + differ(target, exp["target"])
        + differ(pos, exp["pos"]),
        "reduced": _rows_differ(reduced, exp["reduced"]),
        "restored": _rows_differ(restored, exp["restored"]),
        "status": status_bad,
    }
    dt = time.monotonic() - t0
    summary = {
        "ok": error is None and all(v == 0 for v in mism.values()),
        "core": info.core_name, "tokens": used, "grid": list(grid), "N": N,
        "n_kept": exp["n_kept"], "r": exp.get("r", 0), "mismatches": mism,
        "checked": sorted(mism), "error": error,
        "frames": link.stats["frames"], "bytes_out": link.stats["bytes_out"],
        "bytes_in": link.stats["bytes_in"], "resends": link.stats["resends"],
        "seconds": round(dt, 3), "status": st,
    }
    log(("PASS" if summary["ok"] else "FAIL") + f": map, reduced, restored, status vs "
        f"{'golden model' if tru else 'echo model'}; "
        f"mismatches {mism}; {summary['frames']} frames, {summary['bytes_out']} B out, "
        f"{summary['bytes_in']} B in, {dt:.2f} s")
    return summary


def _rows_differ(a, b) -> int:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return max(len(a), len(b))
    return int((a != b).any(axis=1).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fpga.host",
        description="Talk to an ORBIS board over its UART link (see docs/fpga.md).")
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1 or COM3")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--timeout", type=float, default=2.0, help="reply timeout in seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the board's INFO reply")
    sub.add_parser("status", help="print the status registers")
    sub.add_parser("ping", help="round-trip a test payload")
    run = sub.add_parser("run", help="run a reduction and check it against the golden model")
    run.add_argument("--grid", default="2,4,4", help="F,H,W (default 2,4,4)")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--source", choices=("video", "random"), default="video")
    run.add_argument("--ratio", type=float, default=0.5, help="merged fraction of the src")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    try:
        t = SerialTransport(args.port, args.baud)
    except Exception as e:  # noqa: BLE001 - pyserial raises several types
        print(f"error: cannot open {args.port}: {e}", file=sys.stderr)
        return 2
    link = proto.Link(t, timeout=args.timeout)
    try:
        if args.cmd == "info":
            print(link.get_info())
        elif args.cmd == "status":
            for k, v in link.status().items():
                print(f"  {k:12s} 0x{v:08x} ({v})")
        elif args.cmd == "ping":
            data = bytes(range(64))
            t0 = time.monotonic()
            ok = link.ping(data) == data
            print(f"ping {'ok' if ok else 'MISMATCH'} in {1e3 * (time.monotonic() - t0):.1f} ms")
            return 0 if ok else 1
        else:
            grid = tuple(int(v) for v in args.grid.split(","))
            if len(grid) != 3:
                raise ValueError(f"--grid must be F,H,W, not {args.grid!r}")
            s = run_reduction(link, grid=grid, seed=args.seed, source=args.source,
                              ratio=args.ratio)
            if args.json:
                print(json.dumps(s, indent=2))
            return 0 if s["ok"] else 1
    except (proto.LinkError, proto.ProtocolError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        t.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
