"""``make synth``: area, FPGA resources and fmax per block, the DATM area share and hiding.

Run as ``python -m tools.synth --preset P [--target generic|ice40|ecp5|all]``. Writes
``build/synth/<preset>/report.md``, ``report.json`` and ``area.png``; see ``docs/synth.md``.

How it stays fast
    * Hierarchy is kept. Amaranth writes one Verilog module per submodule *instance*; modules
      whose text is identical up to their own name are merged into one definition
      (:func:`dedupe_verilog`), so Yosys synthesises every distinct unit once and ``stat``
      multiplies it by its instance count.
    * The reference array is never elaborated whole: one PE and one skew stage are
      synthesised and scaled by :meth:`hw.refarray.ReferenceArray.unit_counts`.
    * Every tool run is cached under ``build/synth/cache`` by the SHA-256 of its inputs (Verilog,
      script, tool version, options); jobs run on a small thread pool (``--jobs``, default 2).

Generic area
    ``synth -run begin:fine``, then the fine stage without ``memory_map`` (memories stay
    ``$mem_v2`` and are counted as SRAM bits), ``dfflegalize`` to plain D flip-flops (so that
    ``stat -tech cmos`` knows every cell), ``abc`` and ``stat -tech cmos``. SRAM is estimated at
    :data:`SRAM_T_PER_BIT` transistors per bit.

FPGA
    ``synth_ice40 -dsp`` / ``synth_ecp5`` resource counts (flattened), and place and route of the
    block inside a harness (:func:`harness_verilog`: inputs from a shift chain, outputs into a
    MISR-like register chain, one pin each) so that a wide block fits the package and every
    path measured is register to register. nextpnr's ``--freq`` is the clock constraint.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hw.params import PRESETS, ParamError, default_quota, preset

from . import cyclemodel

__all__ = ["dedupe_verilog", "top_ports", "harness_verilog", "harness_ffs", "parse_generic", "parse_fpga",
           "REFERENCE", "HIDING", "run", "main"]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SRAM_T_PER_BIT = 6          # 6T SRAM cell; periphery not counted (stated in the report)
TARGETS = ("generic", "ice40", "ecp5")

# Targets run by default, and the device each FPGA preset is placed and routed on.
DEFAULT_TARGETS = {"ice40-small": ("generic", "ice40"), "ecp5-default": ("generic", "ecp5"),
                   "cogvideox-2b": ("generic",)}
HOME_DEVICE = {"ice40-small": "ice40", "ecp5-default": "ecp5"}
DEVICES = {
    "ice40": dict(name="iCE40 UP5K (sg48)", args=["--up5k", "--package", "sg48"],
                  freq=48.0, floor=40.0),
    "ecp5": dict(name="ECP5-85F (CABGA381)", args=["--85k", "--package", "CABGA381"],
                 freq=125.0, floor=100.0),
}

# Reference compute array per preset (see docs/synth.md for the reasoning).
# ``kind`` is the PE of hw.refarray: "int8" (int8 x int8, 32-bit accumulator) or "bf16"
# (bf16 x bf16, fp32 accumulator, the number format video DiTs run inference in). The report
# also states the share against the other kind at the same size.
REFERENCE = {
    "ice40-small": dict(rows=8, cols=8, kind="int8",
                        why="a small int8 array of the class an UP5K host could carry"),
    "ecp5-default": dict(rows=32, cols=32, kind="int8",
                         why="32 x 32 int8 MACs, 32-bit accumulators (1024 MAC/cycle)"),
    "cogvideox-2b": dict(rows=128, cols=128, kind="bf16",
                         why="128 x 128 bf16 MACs with fp32 accumulators (16384 MAC/cycle, "
                             "32.8 TFLOPS at 1 GHz): CogVideoX runs inference in bf16; an "
                             "A100-class accelerator has about 10x that throughput, so the "
                             "share is not flattered"),
}
SENSITIVITY_SIZES = (32, 64, 128, 256)
# Placed and routed by default, per home device: the unit (whole hierarchy) and, on the
# UP5K (a few seconds each), the two blocks whose timing the design was restructured for. On
# the 85k ECP5 the top's own run takes most of the flow's time (several minutes), so the
# blocks are placed on their own only when asked: `--pnr-blocks all` or `--pnr-blocks B,..`.
DEFAULT_PNR_BLOCKS = {"ice40": ("top", "similarity", "quantizer"), "ecp5": ("top",)}

# Layer shapes for the hiding analysis. CogVideoX-2b: 13 x 30 x 45 latent tokens (480x720,
# 49 frames, 2x2 patches), 30 heads of dim 64; the 226 text tokens are left out (fewer
# attention cycles, so hiding is judged conservatively).
HIDING = {
    "cogvideox-2b": dict(F=13, H=30, W=45, heads=30, head_dim=64, reduction=0.5),
}


def log(msg: str, t0=[time.perf_counter()]):
    print(f"[{time.perf_counter() - t0[0]:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Verilog handling

_MOD_RE = re.compile(r"^module (\\\S+|[\w$]+)\s*\(", re.M)
_INST_RE = re.compile(r"^(\s+)(\\\S+|[A-Za-z_][\w$]*)(\s+)(\\\S+|[A-Za-z_][\w$]*)(\s*\()", re.M)


def _split_modules(text: str) -> dict:
    """``{name: text}`` of every module, attributes before ``module`` included."""
    mods = {}
    pos = 0
    for m in _MOD_RE.finditer(text):
        end = text.index("\nendmodule", m.end()) + len("\nendmodule")
        start = text.rfind("\n\n", pos, m.start())
        start = pos if start < 0 else start + 2
        mods[m.group(1)] = text[start:end] + "\n"
        pos = end
    return mods


_AUTO_RE = re.compile(r"\\\S*?\$\d+(?=\s)")


def _normalise_auto(body: str) -> str:
    """Renumber generated names (``\\$auto$...$6``, ``\\a_i$18``) by first appearance.

    The numbers are global to the Verilog file, so two identical modules differ only in
    them; the names are local to the module, so renumbering keeps the text equivalent.
    """
    seen = {}
    return _AUTO_RE.sub(lambda m: seen.setdefault(m.group(0), f"@auto{len(seen)}@"), body)


def dedupe_verilog(text: str, top: str) -> tuple:
    """Merge modules that are identical up to their own and their children's names.

    Returns
    -------
    (str, dict)
        The Verilog with one definition per distinct module, and ``{"modules": n_before,
        "unique": n_after}``.
    """
    mods = _split_modules(text)
    children = {n: [c for c in (g.group(2) for g in _INST_RE.finditer(t)) if c in mods]
                for n, t in mods.items()}
    canon, rep, order = {}, {}, []

    def visit(n):
        if n in canon:
            return
        for c in children[n]:
            visit(c)
        body = _MOD_RE.sub("module @SELF@ (", mods[n], count=1)
        body = _INST_RE.sub(lambda g: g.group(1) + (f"@{canon[g.group(2)]}@"
                            if g.group(2) in canon else g.group(2)) + g.group(3)
                            + g.group(4) + g.group(5), body)
        body = _normalise_auto(body)
        h = hashlib.sha256(body.encode()).hexdigest()[:16]
        if n == top:
            h = "top:" + h
        canon[n] = h
        if h not in rep:
            rep[h] = n
            order.append(n)

    for n in mods:
        visit(n)
    out = []
    for n in order:
        t = _INST_RE.sub(lambda g: g.group(1) + (rep[canon[g.group(2)]] if g.group(2) in canon
                         else g.group(2)) + g.group(3) + g.group(4) + g.group(5), mods[n])
        out.append(t)
    return "\n".join(out), {"modules": len(mods), "unique": len(order)}


_PORT_RE = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                      r"(?:\[(\d+):(\d+)\]\s*)?(\\\S+|[A-Za-z_][\w$]*)\s*;", re.M)


def top_ports(text: str, top: str) -> list:
    """``[(direction, name, width)]`` of module ``top`` (Amaranth's declaration style)."""
    mods = _split_modules(text)
    key = top if top in mods else "\\" + top
    ports = []
    for d, hi, lo, name in _PORT_RE.findall(mods[key]):
        w = abs(int(hi) - int(lo)) + 1 if hi else 1
        ports.append((d, name.lstrip("\\"), w))
    return ports


#: Output bits folded into one capture register of the harness (a LUT4: three outputs and
#: the previous capture bit), so the capture chain costs a third of a logic cell per output.
HARNESS_FOLD = 3


def _harness_split(ports: list) -> tuple:
    ins = [(n, w) for d, n, w in ports if d == "input" and n != "clk"]
    outs = [(n, w) for d, n, w in ports if d == "output"]
    ni = max(1, sum(w for _, w in ins))
    no = max(1, sum(w for _, w in outs))
    return ins, outs, ni, no, -(-no // HARNESS_FOLD)


def harness_ffs(ports: list) -> int:
    """Flip-flops of :func:`harness_verilog`'s harness around a module with ``ports``."""
    _, _, ni, _, nc = _harness_split(ports)
    return ni + 1 + nc


def harness_verilog(top: str, ports: list) -> str:
    """A wrapper with pins ``clk``, ``din``, ``dout`` around module ``top``.

    Every input bit of ``top`` (``rst`` too) comes from a shift chain fed by ``din``; the
    output bits go, :data:`HARNESS_FOLD` at a time, into a register chain
    ``cap[j+1] <= cap[j] ^ o[j] ^ o[j+nc] ^ o[j+2nc]`` ending at ``dout``. Nothing is
    optimised away and each path through ``top`` is register to register; an input bit costs
    one flip-flop and an output bit a third of one (a small FPGA has room for little more
    than the unit).
    """
    ins, outs, ni, no, nc = _harness_split(ports)
    k = HARNESS_FOLD
    fold = " ^ ".join(f"op[{(j + 1) * nc - 1}:{j * nc}]" for j in range(k))
    lines = ["module orbis_harness(input clk, input din, output dout);",
             f"  reg [{ni}:0] sin = 0;",
             f"  always @(posedge clk) sin <= {{sin[{ni - 1}:0], din}};",
             f"  wire [{no - 1}:0] o;",
             f"  wire [{k * nc - 1}:0] op = o;",
             f"  reg [{nc}:0] cap = 0;",
             f"  always @(posedge clk) cap <= {{cap[{nc - 1}:0] ^ {fold}, 1'b0}};",
             f"  assign dout = cap[{nc}];"]
    conns, i, o = [], 1, 0
    if any(n == "clk" for _, n, _ in ports):
        conns.append(".clk(clk)")
    for n, w in ins:
        conns.append(f".\\{n} (sin[{i + w - 1}:{i}])")
        i += w
    for n, w in outs:
        conns.append(f".\\{n} (o[{o + w - 1}:{o}])")
        o += w
    if not outs:
        lines.append("  assign o = 0;")
    lines.append(f"  \\{top.lstrip(chr(92))} dut (" + ", ".join(conns) + ");")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Hierarchical blocks: registered blocks inside a parent become blackboxes

@contextlib.contextmanager
def blackbox_children(root, params, classes: dict):
    """Elaborate ``root`` with every registered block below it replaced by a blackbox.

    While active, Amaranth's ``Fragment.get`` returns, for a component (other than ``root``)
    whose class is a key of ``classes`` and whose ``params`` equal ``params``, an
    ``Instance`` of module ``orbis_bb_<block>`` connected to all of its ports. The parent is
    then synthesised alone (its glue) and the child figures come from the child's own block
    results: nothing is synthesised twice.

    Yields
    ------
    list
        Filled during elaboration with ``(block_name, [(direction, port, width)])`` per
        replaced instance.
    """
    from amaranth.hdl import ClockSignal, Instance, ResetSignal, Shape, Value
    from amaranth.hdl import _ir
    from amaranth.lib import wiring

    found = []
    orig = _ir.Fragment.get

    def get(obj, platform):
        if (obj is not root and isinstance(obj, wiring.Component) and type(obj) in classes
                and getattr(obj, "params", None) == params):
            name = classes[type(obj)]
            obj._MustUse__used = True
            kw = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
            ports = [("input", "clk", 1), ("input", "rst", 1)]
            for path, member, value in obj.signature.flatten(obj):
                pname = "__".join(str(x) for x in path)
                inp = member.flow == wiring.In
                kw[("i_" if inp else "o_") + pname] = Value.cast(value)
                ports.append(("input" if inp else "output", pname,
                              Shape.cast(member.shape).width))
            found.append((name, ports))
            return orig(Instance(f"orbis_bb_{name}", **kw), platform)
        return orig(obj, platform)

    _ir.Fragment.get = staticmethod(get)
    try:
        yield found
    finally:
        _ir.Fragment.get = staticmethod(orig)


def blackbox_stub(name: str, ports: list) -> str:
    """Verilog declaration of blackbox module ``orbis_bb_<name>``."""
    decl = [f"  {d} {'[%d:0] ' % (w - 1) if w > 1 else ''}{n};" for d, n, w in ports]
    return (f"(* blackbox *)\nmodule orbis_bb_{name}({', '.join(n for _, n, _ in ports)});\n"
            + "\n".join(decl) + "\nendmodule\n")


# ---------------------------------------------------------------------------------------------
# Tool runs (cached)

def tool(name: str) -> str:
    env = {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40", "nextpnr-ecp5": "NEXTPNR_ECP5"}
    path = os.environ.get(env[name]) or str(VENV_BIN / f"yowasp-{name}")
    if not Path(path).exists() and not shutil.which(path):
        path = shutil.which(f"yowasp-{name}") or path
    return path


_VERSIONS = {}


def tool_version(name: str) -> str:
    if name not in _VERSIONS:
        try:
            out = subprocess.run([tool(name), "--version" if "nextpnr" in name else "-V"],
                                 capture_output=True, text=True, timeout=600)
            _VERSIONS[name] = (out.stdout or out.stderr).strip().splitlines()[-1]
        except Exception as e:   # reported by the run that needs the tool
            _VERSIONS[name] = f"unavailable: {e}"
    return _VERSIONS[name]


class ToolError(RuntimeError):
    pass


@dataclass
class Ctx:
    cache: Path
    logs: Path
    timeout: float
    use_cache: bool = True
    running: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Every tool run of this flow: label, wall seconds, exit status (for the report's
    # "where the time went" table).
    runs: list = field(default_factory=list)


def _cached(ctx: Ctx, key_parts: list, fn):
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()
    path = ctx.cache / f"{key}.json"
    if ctx.use_cache and path.exists():
        res = json.loads(path.read_text())
        res["cached"] = True
        return res
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    res["cached"] = False
    return res


def _run_tool(ctx: Ctx, label: str, argv: list, cwd: Path, logname: str):
    with ctx.lock:
        ctx.running[label] = t0 = time.perf_counter()
    status = "timeout"
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=ctx.timeout)
        status = "ok" if p.returncode == 0 else f"exit {p.returncode}"
    except subprocess.TimeoutExpired:
        raise ToolError(f"timeout after {ctx.timeout:.0f} s") from None
    finally:
        with ctx.lock:
            ctx.running.pop(label, None)
            ctx.runs.append(dict(label=label, tool=Path(argv[0]).name,
                                 seconds=round(time.perf_counter() - t0, 1), status=status))
    (ctx.logs / logname).write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode:
        err = [ln for ln in (p.stdout + p.stderr).splitlines() if "ERROR" in ln.upper()]
        raise ToolError((err[-1] if err else f"exit code {p.returncode}")[:300]
                        + f" (log: {ctx.logs / logname})")
    return p


GENERIC_SCRIPT = """\
read_verilog -sv design.v
hierarchy -check -top {top}
synth -top {top} -run begin:fine
opt -fast -full
write_json coarse.json
opt -full
techmap
opt -fast
dfflegalize -cell $_DFF_P_ 01
abc
opt -fast
tee -q -o stat.json stat -json -tech cmos
"""


def _param_int(v) -> int:
    return int(v, 2) if isinstance(v, str) else int(v)


def memory_bits(coarse: dict, top: str) -> int:
    """SRAM bits of the hierarchy under ``top`` in a ``write_json`` netlist."""
    mods = coarse["modules"]
    own, subs = {}, {}
    for name, m in mods.items():
        own[name] = 0
        subs[name] = []
        for c in m.get("cells", {}).values():
            if c["type"] in ("$mem_v2", "$mem"):
                p = c["parameters"]
                own[name] += _param_int(p["WIDTH"]) * _param_int(p["SIZE"])
            elif c["type"] in mods:
                subs[name].append(c["type"])
    memo = {}

    def total(n):
        if n not in memo:
            memo[n] = own[n] + sum(total(c) for c in subs[n])
        return memo[n]

    return total(top if top in mods else top.lstrip("\\"))


def parse_generic(stat: dict, mem_bits: int) -> dict:
    d = stat["design"]
    cells = {k: v for k, v in d["num_cells_by_type"].items() if k.startswith("$")}
    t = str(d.get("estimated_num_transistors", "0"))
    logic_cells = sum(v for k, v in cells.items() if not k.startswith("$mem"))
    ff = sum(v for k, v in cells.items() if "DFF" in k or "DLATCH" in k)
    logic_t = int(t.rstrip("+"))
    return dict(cells=logic_cells, ff_bits=ff, transistors_logic=logic_t,
                unknown_cells=t.endswith("+") and not any(k.startswith("$mem") for k in cells),
                mem_bits=mem_bits, transistors_sram=mem_bits * SRAM_T_PER_BIT,
                transistors=logic_t + mem_bits * SRAM_T_PER_BIT, cell_types=cells)


def run_generic(ctx: Ctx, label: str, verilog: str, top: str) -> dict:
    script = GENERIC_SCRIPT.format(top=top)

    def go():
        wd = ctx.cache / "work" / hashlib.sha256((verilog + script).encode()).hexdigest()[:16]
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "design.v").write_text(verilog)
        (wd / "synth.ys").write_text(script)
        t0 = time.perf_counter()
        _run_tool(ctx, label, [tool("yosys"), "-q", "-s", "synth.ys"], wd,
                  f"{label.replace(' ', '_')}.log")
        stat = json.loads((wd / "stat.json").read_text())
        mem = memory_bits(json.loads((wd / "coarse.json").read_text()), top)
        res = parse_generic(stat, mem)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        shutil.rmtree(wd, ignore_errors=True)
        return res

    return _cached(ctx, ["generic", tool_version("yosys"), script, verilog], go)


FPGA_SYNTH = {
    "ice40": "synth_ice40 -dsp -top {top} -json netlist.json",
    "ecp5": "synth_ecp5 -top {top} -json netlist.json",
}
RESOURCE_CELLS = {
    "ice40": dict(LUT=("SB_LUT4",), FF=("SB_DFF",), carry=("SB_CARRY",), DSP=("SB_MAC16",),
                  BRAM=("SB_RAM40_4K",), SPRAM=("SB_SPRAM256KA",)),
    "ecp5": dict(LUT=("LUT4",), FF=("TRELLIS_FF",), carry=("CCU2C",),
                 DSP=("MULT18X18D", "ALU54B"), BRAM=("DP16KD",), SPRAM=(),
                 LUTRAM=("TRELLIS_DPR16X4",)),
}


def parse_fpga(target: str, cells: dict) -> dict:
    """Resource counts from ``stat`` cell types (a cell type matches by prefix)."""
    res = {}
    for k, prefixes in RESOURCE_CELLS[target].items():
        res[k] = sum(v for t, v in cells.items() if any(t.startswith(p) for p in prefixes))
    return res


def _pnr_report(report: dict) -> dict:
    fmax = report.get("fmax", {})
    got = [v.get("achieved") for v in fmax.values() if v.get("achieved")]
    out = dict(fmax_mhz=round(min(got), 2) if got else None, critical_path=None)
    paths = report.get("critical_paths", [])
    if paths:
        p = paths[0]
        segs = p.get("path", [])
        logic = sum(s.get("delay", 0) for s in segs if s.get("type") == "logic")
        route = sum(s.get("delay", 0) for s in segs if s.get("type") == "routing")
        ends = [s for s in segs if s.get("from") and s.get("to")]
        start = ends[0]["from"].get("cell", "?") if ends else "?"
        end = ends[-1]["to"].get("cell", "?") if ends else "?"
        out["critical_path"] = dict(start=start, end=end, segments=len(segs),
                                    logic_ns=round(logic, 2), routing_ns=round(route, 2))
    util = report.get("utilization", {})
    out["utilization"] = {k: v for k, v in util.items() if v.get("used")}
    return out


def _synth_with_fallback(ctx: Ctx, label: str, wd: Path, name: str, script: str,
                         logname: str) -> str:
    """Run a Yosys FPGA script, falling back when ABC9 crashes.

    ABC9 in the YoWASP build traps on some netlists (seen on the matcher's glue with its
    children blackboxed, iCE40 and ECP5). Fallbacks: ``abc9 -dff`` (flip-flops inside the
    mapping, a different netlist to ABC), then for iCE40 ``-noabc`` (Yosys' own LUT mapping).
    Returns the mapper used.
    """
    variants = [("abc9", "")]
    variants.append(("abc9 -dff (abc9 failed)", " -dff"))
    if "synth_ice40" in script:
        variants.append(("yosys lut mapping (abc9 failed)", " -noabc"))
    err = None
    for i, (mapper, opt) in enumerate(variants):
        text = re.sub(r"(synth_(?:ice40|ecp5)\b[^\n]*)", lambda g: g.group(1) + opt, script)
        (wd / name).write_text(text)
        try:
            _run_tool(ctx, label + (f" ({mapper.split(' (')[0]})" if i else ""),
                      [tool("yosys"), "-q", "-s", name], wd, logname)
            return mapper
        except ToolError as e:
            if "timeout" in str(e):
                raise
            err = e
            log(f"  {label}: yosys failed with {variants[i][0]} ({str(e)[:60]}); retrying")
    raise err


def run_fpga(ctx: Ctx, label: str, verilog: str, top: str, target: str, pnr: bool,
             seed: int = 1, resources: bool = True) -> dict:
    """Resource counts of ``top`` (flattened) and, with ``pnr``, fmax in the harness.

    ``resources=False`` (with ``pnr``) skips the synthesis of the block alone: the counts
    then come from the harness netlist, less the harness's own flip-flops (used for a whole
    hierarchy, whose synthesis is the expensive part).
    """
    script = f"read_verilog -sv design.v\n{FPGA_SYNTH[target].format(top=top)}\n" \
             f"tee -q -o stat.json stat -json\n"
    if not resources:
        script = "(resources from the harness)\n"
    dev = DEVICES[target]
    ports = top_ports(verilog, top)
    harness = harness_verilog(top, ports) if pnr else ""
    pnr_key = f"pnr {dev['args']} {dev['freq']} seed={seed}" if pnr else "no-pnr"
    versions = tool_version("yosys") + (tool_version(f"nextpnr-{target}") if pnr else "")

    def go():
        wd = ctx.cache / "work" / hashlib.sha256(
            (verilog + script + pnr_key).encode()).hexdigest()[:16]
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "design.v").write_text(verilog)
        (wd / "synth.ys").write_text(script)
        t0 = time.perf_counter()
        lname = label.replace(" ", "_").replace("(", "").replace(")", "")
        res = {}
        if resources:
            res["mapper"] = _synth_with_fallback(ctx, label, wd, "synth.ys", script,
                                                 f"{lname}.log")
            stat = json.loads((wd / "stat.json").read_text())["design"]["num_cells_by_type"]
            res = dict(resources=parse_fpga(target, stat), cell_types=stat)
        res["synth_seconds"] = round(time.perf_counter() - t0, 1)
        if pnr:
            (wd / "harness.v").write_text(harness)
            # A whole hierarchy keeps its module boundaries (-noflatten): ABC then maps one
            # module at a time. Flattened, the ECP5 top is one 48k-gate ABC9 problem that the
            # YoWASP build traps on after a minute, and whose '-dff' retry ran over ten
            # minutes; per module it maps in about two. nextpnr flattens the netlist itself.
            nf = "" if resources else " -noflatten"
            pscript = (f"read_verilog -sv design.v harness.v\n"
                       f"{FPGA_SYNTH[target].format(top='orbis_harness')}{nf}\n"
                       f"tee -q -o stat_h.json stat -json\n")
            (wd / "pnr.ys").write_text(pscript)
            t1 = time.perf_counter()
            res["harness_mapper"] = _synth_with_fallback(ctx, label + " (harness)", wd,
                                                         "pnr.ys", pscript,
                                                         f"{lname}_harness.log")
            res["harness_synth_seconds"] = round(time.perf_counter() - t1, 1)
            if not resources:
                stat = json.loads((wd / "stat_h.json").read_text())["design"][
                    "num_cells_by_type"]
                r = parse_fpga(target, stat)
                # The harness's shift chain (inputs + 1) and capture chain.
                r["FF"] -= harness_ffs(ports)
                res.update(resources=r, cell_types=stat, resources_basis="harness netlist "
                           "less harness flip-flops (whole hierarchy, module boundaries "
                           "kept)")
            t1 = time.perf_counter()
            argv = [tool(f"nextpnr-{target}"), *dev["args"], "--json", "netlist.json",
                    "--freq", str(dev["freq"]), "--seed", str(seed), "--report",
                    "report.json", "--timing-allow-fail", "-q"]
            _run_tool(ctx, label + " (nextpnr)", argv, wd, f"{lname}_nextpnr.log")
            res["pnr"] = _pnr_report(json.loads((wd / "report.json").read_text()))
            res["pnr"]["device"] = dev["name"]
            res["pnr"]["constraint_mhz"] = dev["freq"]
            res["pnr_seconds"] = round(time.perf_counter() - t1, 1)
        shutil.rmtree(wd, ignore_errors=True)
        return res

    return _cached(ctx, ["fpga", target, versions, script, pnr_key, harness, verilog], go)


# ---------------------------------------------------------------------------------------------
# Units: blocks of the registry and the reference array's repeated units

@dataclass
class Unit:
    name: str            # row name in the report
    kind: str            # "block" or "ref"
    top: str = ""
    verilog: str = ""
    count: int = 1       # instances (reference units are scaled by this)
    error: str = ""
    info: dict = field(default_factory=dict)
    children: dict = field(default_factory=dict)   # block name -> instances (blackboxed)
    full_verilog: str = ""   # whole hierarchy of a composite block, for place and route


def elaborate_blocks(params, names, full_for=()) -> list:
    """Elaborate blocks; registered blocks inside a block become blackboxes.

    A block that contains other registered blocks (the matcher, the top) is converted with
    its children replaced by ``orbis_bb_<child>`` blackboxes (:func:`blackbox_children`), so
    its Verilog is its own glue; the report adds the children's figures from their own rows.
    Children that are not in ``names`` are added. For blocks in ``full_for`` the whole
    hierarchy is converted too (``Unit.full_verilog``), for place and route.
    """
    from hw.gen import BLOCKS, block_class, build_block, to_verilog
    classes = {block_class(n): n for n in BLOCKS}
    units, todo, seen = [], list(names), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        t0 = time.perf_counter()
        log(f"elaborating block {name} ...")
        u = Unit(name=name, kind="block", top=f"orbis_{name}")
        try:
            comp = build_block(name, params)
            with blackbox_children(comp, params, classes) as found:
                text = to_verilog(comp, name=u.top)
            stubs = dict(found)
            for child, _ in found:
                u.children[child] = u.children.get(child, 0) + 1
                if child not in seen and child not in todo:
                    todo.append(child)
            text += "".join("\n\n" + blackbox_stub(n, ports) for n, ports in stubs.items())
            u.verilog, u.info = dedupe_verilog(text, u.top)
            kids = ", ".join(f"{n} x {c}" for n, c in u.children.items())
            log(f"  {name}: {text.count(chr(10))} lines, {u.info['modules']} modules -> "
                f"{u.info['unique']} distinct{'; blackboxed children: ' + kids if kids else ''}"
                f" ({time.perf_counter() - t0:.1f} s)")
            if u.children and name in full_for:
                t0 = time.perf_counter()
                full = to_verilog(build_block(name, params), name=u.top)
                u.full_verilog = dedupe_verilog(full, u.top)[0]
                log(f"  {name} (whole hierarchy, for place and route): "
                    f"{full.count(chr(10))} lines ({time.perf_counter() - t0:.1f} s)")
        except Exception as e:
            u.error = f"elaboration failed: {type(e).__name__}: {e}"
            log(f"  {name}: ERROR {u.error}")
            traceback.print_exc(limit=3)
        units.append(u)
    return units


def reference_kind(cfg: dict) -> str:
    return cfg.get("kind", "int8")


def other_reference(cfg: dict) -> dict:
    """The same array size with the other PE kind (int8 <-> bf16), for comparison."""
    kind = "bf16" if reference_kind(cfg) == "int8" else "int8"
    return dict(rows=cfg["rows"], cols=cfg["cols"], kind=kind,
                why="the same size with the other PE kind, for comparison")


def reference_units(cfg: dict, prefix: str = "ref") -> list:
    """One unit per repeated part of the array (PE, skew stage), with its count."""
    from hw.gen import to_verilog
    from hw.refarray import ReferenceArray
    kw = {k: cfg[k] for k in ("rows", "cols", "kind", "a_bits", "b_bits", "acc_bits")
          if k in cfg}
    arr = ReferenceArray(**kw)
    arr._MustUse__silence = True    # only its unit counts are used; the PEs are synthesised
    units = []
    for name, (factory, count) in arr.unit_counts().items():
        top = f"{prefix}_{name}_{reference_kind(cfg)}"
        units.append(Unit(name=f"{prefix}.{name}", kind=prefix, top=top, count=count,
                          verilog=to_verilog(factory(), name=top)))
    return units


# ---------------------------------------------------------------------------------------------
# The flow

def _heartbeat(ctx: Ctx, stop: threading.Event, every: float):
    while not stop.wait(every):
        with ctx.lock:
            now = time.perf_counter()
            busy = ", ".join(f"{k} ({now - t:.0f} s)" for k, t in ctx.running.items())
        if busy:
            log(f"  still running: {busy}")


def run(preset_name: str, targets=None, out_dir=None, params=None, blocks=None,
        reference=None, jobs: int = 2, timeout: float = 1800.0, use_cache: bool = True,
        pnr: bool | None = None, heartbeat: float = 30.0, pnr_blocks=None) -> dict:
    """Run the flow and write the report; return the report dictionary.

    Parameters
    ----------
    preset_name : str
        Preset name (chooses parameters, default targets, reference array and hiding shape).
    targets : sequence of str, optional
        Subset of ``generic``, ``ice40``, ``ecp5``; default per preset.
    params : OrbisParams, optional
        Overrides the preset's parameters (the smoke test uses tiny ones).
    blocks : list of str, optional
        Block names (default: everything in ``hw.gen.BLOCKS``).
    reference : dict, optional
        Reference array configuration (default :data:`REFERENCE` of the preset).
    pnr : bool, optional
        Place and route on FPGA targets; default: only on the preset's home device.
    pnr_blocks : list of str, optional
        Blocks that are placed and routed (default: all). A composite block (one holding
        other blocks, e.g. the top) is placed and routed as its whole hierarchy.
    """
    from hw import gen
    t_start = time.perf_counter()
    params = params or preset(preset_name)
    targets = tuple(targets or DEFAULT_TARGETS.get(preset_name, ("generic",)))
    for t in targets:
        if t not in TARGETS:
            raise ParamError(f"target must be one of {TARGETS + ('all',)}, not {t!r}")
    out_dir = Path(out_dir or ROOT / "build" / "synth" / preset_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(cache=Path(out_dir).parent / "cache", logs=out_dir / "logs", timeout=timeout,
              use_cache=use_cache)
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ref_cfg = dict(reference or REFERENCE.get(preset_name, REFERENCE["ecp5-default"]))

    names = list(blocks if blocks is not None else gen.BLOCKS)
    log(f"preset {preset_name}: targets {', '.join(targets)}; blocks: "
        f"{', '.join(names) if names else '(none registered)'}")
    log("checking tools (yowasp builds itself on first use, about a minute) ...")
    for t in ["yosys"] + [f"nextpnr-{t}" for t in targets if t != "generic"]:
        log(f"  {t}: {tool_version(t)}")
    # Place and route runs on the home device (or every FPGA target with pnr=True), for the
    # leaf blocks on their own and for a composite block (the top) on its whole hierarchy.
    def pnr_on(target):
        return target != "generic" and (pnr if pnr is not None
                                        else HOME_DEVICE.get(preset_name) == target)
    # Leaf blocks placed and routed on their own; composite blocks (the top by default) as
    # their whole hierarchy. A composite other than the top is not placed and routed unless
    # asked: the top's run covers its paths.
    pnr_set = set(pnr_blocks if pnr_blocks is not None else names)
    full_for = (pnr_set if pnr_blocks is not None else {"top"}) \
        if any(pnr_on(t) for t in targets) else set()
    units = elaborate_blocks(params, names, full_for=full_for)
    units += reference_units(ref_cfg) + reference_units(other_reference(ref_cfg), "alt")

    # Jobs: (unit, target). Big blocks first so the pool stays busy.
    order = sorted(units, key=lambda u: -len(u.verilog))
    results = {u.name: {} for u in units}
    stop = threading.Event()
    hb = threading.Thread(target=_heartbeat, args=(ctx, stop, heartbeat), daemon=True)
    hb.start()

    def job(u: Unit, target: str, full: bool = False):
        # full: place and route of a composite block's whole hierarchy (flattened).
        label = f"{target} {u.name}{' (whole)' if full else ''}"
        do_pnr = u.kind == "block" and pnr_on(target) and (
            full or (u.name in pnr_set and not u.children))
        log(f"start {label}{' + place&route' if do_pnr else ''}")
        t0 = time.perf_counter()
        try:
            if target == "generic":
                r = run_generic(ctx, label, u.verilog, u.top)
            elif full:
                r = run_fpga(ctx, label, u.full_verilog, u.top, target, True, resources=False)
            else:
                # A block that is placed and routed takes its counts from the harness
                # netlist (one FPGA synthesis instead of two).
                r = run_fpga(ctx, label, u.verilog, u.top, target, do_pnr,
                             resources=not do_pnr)
            extra = ""
            if r.get("pnr"):
                extra = f", fmax {r['pnr']['fmax_mhz']} MHz"
            log(f"done  {label} in {time.perf_counter() - t0:.1f} s"
                f"{' (cached)' if r.get('cached') else ''}{extra}")
        except Exception as e:
            r = dict(error=f"{type(e).__name__}: {e}")
            log(f"FAIL  {label}: {r['error']}")
        return u.name, target + ("_whole" if full else ""), r

    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            # The whole-hierarchy place and route runs are the longest: submit them first.
            futs = [pool.submit(job, u, t, True) for u in order for t in targets
                    if u.full_verilog and not u.error and pnr_on(t)]
            futs += [pool.submit(job, u, t) for u in order if not u.error for t in targets
                     if not (u.kind != "block" and t != "generic")]
            for f in cf.as_completed(futs):
                name, target, r = f.result()
                results[name][target] = r
    finally:
        stop.set()

    report = assemble(preset_name, params, targets, units, results, ref_cfg)
    report["flow_seconds"] = round(time.perf_counter() - t_start, 1)
    report["tool_runs"] = sorted(ctx.runs, key=lambda r: -r["seconds"])
    write_outputs(report, out_dir)
    log(f"done in {report['flow_seconds']:.1f} s: {out_dir / 'report.md'}")
    return report


GENERIC_KEYS = ("cells", "ff_bits", "transistors_logic", "mem_bits", "transistors_sram",
                "transistors")
FPGA_KEYS = ("LUT", "FF", "carry", "DSP", "BRAM", "SPRAM", "LUTRAM")


def _sum_rows(rows, key):
    vals = [r.get(key) for r in rows]
    return sum(v for v in vals if isinstance(v, (int, float)))


def assemble(preset_name, params, targets, units, results, ref_cfg) -> dict:
    blocks, ref, alt = {}, {}, {}
    for u in units:
        res = results.get(u.name, {})
        row = dict(kind=u.kind, count=u.count, modules=u.info.get("modules"),
                   distinct_modules=u.info.get("unique"))
        if u.error:
            row["error"] = u.error
        g = res.get("generic")
        if g and "error" not in g:
            for k in ("cells", "ff_bits", "transistors_logic", "mem_bits", "transistors_sram",
                      "transistors", "unknown_cells"):
                row[k] = g[k] * (u.count if isinstance(g[k], int) and
                                 not isinstance(g[k], bool) else 1)
        elif g:
            row.setdefault("errors", {})["generic"] = g["error"]
        for t in ("ice40", "ecp5"):
            r = res.get(t)
            if not r:
                continue
            if "error" in r:
                row.setdefault("errors", {})[t] = r["error"]
                continue
            row[t] = dict(r["resources"])
            if r.get("pnr"):
                row[t]["fmax_mhz"] = r["pnr"]["fmax_mhz"]
                row[t]["critical_path"] = r["pnr"]["critical_path"]
                row[t]["device"] = r["pnr"]["device"]
                row[t]["constraint_mhz"] = r["pnr"]["constraint_mhz"]
        dict(block=blocks, ref=ref, alt=alt)[u.kind][u.name] = row

    # Composite blocks: own glue (children blackboxed) + children from their own rows.
    children = {u.name: dict(u.children) for u in units if u.kind == "block" and u.children}
    resolved = set()

    def resolve(n):
        row = blocks[n]
        if n in resolved or n not in children:
            return row
        resolved.add(n)
        kids = {c: resolve(c) if c in blocks else {} for c in children[n]}
        row["children"] = children[n]
        row["glue"] = {k: row[k] for k in GENERIC_KEYS if k in row}
        missing = [c for c, r in kids.items() if "transistors" not in r]
        if row["glue"] and not missing:
            for k in GENERIC_KEYS:
                row[k] = row["glue"][k] + sum(cnt * kids[c][k]
                                              for c, cnt in children[n].items())
            row["unknown_cells"] = any(kids[c].get("unknown_cells") for c in kids)
        elif row["glue"]:
            for k in GENERIC_KEYS:
                row.pop(k, None)
            row.setdefault("errors", {})["generic"] = f"no generic result for {missing}"
        for t in ("ice40", "ecp5"):
            if t not in row:
                continue
            miss = [c for c, r in kids.items() if t not in r]
            row[t] = dict(row[t])
            row["glue_" + t] = {k: row[t][k] for k in FPGA_KEYS if k in row[t]}
            if miss:
                row.pop(t)
                row.setdefault("errors", {})[t] = f"no {t} result for {miss}"
                continue
            for k in row["glue_" + t]:
                row[t][k] = row["glue_" + t][k] + sum(
                    cnt * kids[c][t].get(k, 0) for c, cnt in children[n].items())
            row[t]["basis"] = "glue + children"
        res = results.get(n, {})
        for t in ("ice40", "ecp5"):
            w = res.get(t + "_whole")
            if not w:
                continue
            if "error" in w:
                row.setdefault("errors", {})[t + " place&route"] = w["error"]
                continue
            row.setdefault(t, {})["whole"] = w["resources"]
            row[t]["fmax_mhz"] = w["pnr"]["fmax_mhz"]
            row[t]["critical_path"] = w["pnr"]["critical_path"]
            row[t]["device"] = w["pnr"]["device"]
            row[t]["constraint_mhz"] = w["pnr"]["constraint_mhz"]
            row[t]["fmax_basis"] = ("whole hierarchy (mapped per module), placed and routed "
                                    "flattened")
        return row

    for n in list(blocks):
        resolve(n)

    # Instances of every block in the unit (for the area breakdown without double counting).
    nested = {c for kids in children.values() for c in kids}
    roots = [n for n in blocks if n not in nested]
    instances = {}

    def count(n, k):
        instances[n] = instances.get(n, 0) + k
        for c, cnt in children.get(n, {}).items():
            count(c, k * cnt)

    for n in (["top"] if "top" in blocks else roots):
        count(n, 1)

    # The unit's total: the top if it exists, else the sum of the outermost blocks.
    ok = {n: r for n, r in blocks.items() if "transistors" in r}
    if "top" in ok:
        unit_basis, unit = "top (glue + blocks, each synthesised once)", dict(ok["top"])
    else:
        unit_basis = "sum of outermost blocks" if ok else "none"
        unit = {k: _sum_rows([ok[n] for n in roots if n in ok], k) for k in GENERIC_KEYS}
    consistency = {}
    for t in ("ice40", "ecp5"):
        top = blocks.get("top", {}).get(t, {})
        if top.get("whole"):
            consistency[t] = {k: dict(hierarchical=top[k], whole=top["whole"][k],
                                      ratio=round(top["whole"][k] / top[k], 3)
                                      if top[k] else None)
                              for k in ("LUT", "FF", "DSP", "BRAM") if k in top}

    ref_logic = _sum_rows(ref.values(), "transistors_logic")
    ref_cells = _sum_rows(ref.values(), "cells")
    pe_t = ref.get("ref.pe", {}).get("transistors_logic")
    pe_n = ref.get("ref.pe", {}).get("count") or 1
    skew_t = {n: (r.get("transistors_logic") or 0) / (r.get("count") or 1)
              for n, r in ref.items() if n != "ref.pe"}
    share = None
    if ref_logic and unit.get("transistors_logic"):
        ul = unit["transistors_logic"]
        share = dict(
            basis=unit_basis,
            unit_logic_transistors=ul,
            reference_logic_transistors=ref_logic,
            logic_share=ul / (ul + ref_logic),
            unit_sram_bits=unit.get("mem_bits", 0),
            note=("logic share: the unit's logic over unit logic + reference array logic "
                  "(PEs and skew registers only, no SRAM on either side); the unit's SRAM is "
                  "listed separately at 6 transistors per bit"),
        )
        ut = unit["transistors"]
        share["share_with_unit_sram_vs_array_logic"] = ut / (ut + ref_logic)
        sens = {}
        if pe_t:
            per_pe = pe_t / pe_n
            for s in SENSITIVITY_SIZES:
                skew_n = s * (s - 1)    # rows*(rows-1)/2 + cols*(cols-1)/2 for a square array
                arr_t = s * s * per_pe + skew_n * sum(skew_t.values())
                sens[f"{s}x{s}"] = dict(array_logic_transistors=round(arr_t),
                                        logic_share=ul / (ul + arr_t))
        share["sensitivity"] = sens
        alt_logic = _sum_rows(alt.values(), "transistors_logic")
        if alt_logic:
            ocfg = other_reference(ref_cfg)
            share["other_kind"] = dict(kind=ocfg["kind"], array=f"{ocfg['rows']}x{ocfg['cols']}",
                                       reference_logic_transistors=alt_logic,
                                       logic_share=ul / (ul + alt_logic))

    fmax = {}
    for t in ("ice40", "ecp5"):
        vals = {n: r[t]["fmax_mhz"] for n, r in blocks.items()
                if t in r and r[t].get("fmax_mhz")}
        if vals:
            worst = min(vals, key=vals.get)
            fmax[t] = dict(device=DEVICES[t]["name"], per_block=vals, worst_block=worst,
                           worst_mhz=vals[worst], floor_mhz=DEVICES[t]["floor"],
                           goal_mhz=DEVICES[t]["freq"],
                           unit_mhz=vals.get("top", vals[worst]))

    return dict(preset=preset_name, params=params.as_dict(), targets=list(targets),
                blocks=blocks, reference=dict(config=ref_cfg, units=ref,
                                              logic_transistors=ref_logic, cells=ref_cells),
                unit=dict(basis=unit_basis, **unit), consistency=consistency or None,
                instances=instances,
                area_share=share, fmax=fmax, hiding=hiding(preset_name, params, ref_cfg),
                sram_transistors_per_bit=SRAM_T_PER_BIT,
                tools={k: v for k, v in _VERSIONS.items()})


def hiding(preset_name, params, ref_cfg):
    """Matcher cycles for one layer call against that layer's attention on the array."""
    h = HIDING.get(preset_name)
    if not h:
        return None
    N = h["F"] * h["H"] * h["W"]
    nw = cyclemodel.n_windows(h["F"], h["H"], h["W"], params.window)
    n_src0 = N - nw
    r = int(round(h["reduction"] * n_src0))
    quota = default_quota(N)          # the per-call default of hw.params
    kw = dict(F=h["F"], H=h["H"], W=h["W"], D=params.D, P=params.P, L=params.L,
              quota=quota, NB=params.NB, r=r, window=params.window)
    m = cyclemodel.matcher_cycles(R=params.R, **kw)
    m0 = cyclemodel.matcher_cycles(R=0, **kw)
    rows, cols = ref_cfg["rows"], ref_cfg["cols"]
    att = cyclemodel.attention_cycles(n_q=N, n_k=N, head_dim=h["head_dim"], heads=h["heads"],
                                      rows=rows, cols=cols)
    kept = N - r
    att_red = cyclemodel.attention_cycles(n_q=kept, n_k=kept, head_dim=h["head_dim"],
                                          heads=h["heads"], rows=rows, cols=cols)
    sens = {}
    for s in SENSITIVITY_SIZES:
        a = cyclemodel.attention_cycles(n_q=N, n_k=N, head_dim=h["head_dim"],
                                        heads=h["heads"], rows=s, cols=s)
        sens[f"{s}x{s}"] = dict(attention_cycles=a, ratio=m["total"] / a)
    cal = cyclemodel.calibration()
    return dict(shape=dict(F=h["F"], H=h["H"], W=h["W"], N=N, heads=h["heads"],
                           head_dim=h["head_dim"]),
                calibration=dict(call=cyclemodel.RTL_CALL, phases=cal,
                                 max_abs_error=max(abs(v["error"]) for v in cal.values())),
                R=params.R, quota=quota, r=r, n_windows=nw,
                matcher_cycles=m["total"], matcher=m, matcher_cycles_R0=m0["total"],
                array=f"{rows}x{cols}", attention_cycles=att, ratio=m["total"] / att,
                hidden=m["total"] < att,
                reduced_attention_cycles=att_red, ratio_vs_reduced=m["total"] / att_red,
                sensitivity=sens)


# ---------------------------------------------------------------------------------------------
# Output

def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_outputs(report: dict, out_dir: Path):
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(render_md(report))
    try:
        chart(report, out_dir / "area.png")
    except Exception as e:   # the chart is a convenience; the numbers are in the report
        log(f"chart failed: {e}")


def render_md(rep: dict) -> str:
    L = [f"# Synthesis report: preset `{rep['preset']}`", ""]
    L.append(f"Targets: {', '.join(rep['targets'])}. Flow time: {rep.get('flow_seconds')} s. "
             f"Parameters: `{json.dumps(rep['params'])}`.")
    L += ["", "## Generic (ASIC-style) area", "",
          "| block | cells | FF bits | logic transistors | SRAM bits | total transistors "
          "| modules (distinct) |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = list(rep["blocks"].items()) + list(rep["reference"]["units"].items())
    for n, r in rows:
        if "error" in r:
            L.append(f"| {n} | ERROR: {r['error']} | | | | | |")
            continue
        if "generic" in r.get("errors", {}):
            L.append(f"| {n} | ERROR: {r['errors']['generic']} | | | | | |")
            continue
        name = n if r["kind"] == "block" else f"{n} x {r['count']:,}"
        mods = f"{r['modules']} ({r['distinct_modules']})" if r.get("modules") else "-"
        L.append(f"| {name} | {_fmt(r.get('cells'))} | {_fmt(r.get('ff_bits'))} | "
                 f"{_fmt(r.get('transistors_logic'))} | {_fmt(r.get('mem_bits'))} | "
                 f"{_fmt(r.get('transistors'))} | {mods} |")
    u = rep["unit"]
    L.append(f"| **unit ({u['basis']})** | {_fmt(u.get('cells'))} | {_fmt(u.get('ff_bits'))} "
             f"| {_fmt(u.get('transistors_logic'))} | {_fmt(u.get('mem_bits'))} | "
             f"{_fmt(u.get('transistors'))} | |")
    L.append(f"| **reference array** | {_fmt(rep['reference']['cells'])} | | "
             f"{_fmt(rep['reference']['logic_transistors'])} | 0 | "
             f"{_fmt(rep['reference']['logic_transistors'])} | |")
    comp = [(n, r) for n, r in rep["blocks"].items() if r.get("children")]
    if comp:
        L += ["", "Blocks that hold other blocks are synthesised with those children as "
              "blackboxes (their own *glue*), and their figures are glue + children from the "
              "children's rows; every block is synthesised once."]
        for n, r in comp:
            g = r.get("glue", {})
            L.append(f"- `{n}` = glue ({_fmt(g.get('transistors_logic'))} logic transistors, "
                     f"{_fmt(g.get('mem_bits'))} SRAM bits) + " + " + ".join(
                         f"{c}" + (f" x {k}" if k > 1 else "") for c, k in r["children"].items()))
    if rep.get("consistency"):
        L += ["", "Top, hierarchical sum vs the whole hierarchy mapped in one run (the netlist "
              "that is placed and routed): " + "; ".join(
                  f"{t}: " + ", ".join(f"{k} {v['hierarchical']:,} vs {v['whole']:,}"
                                       for k, v in c.items())
                  for t, c in rep["consistency"].items()) + "."]
    for t in ("ice40", "ecp5"):
        if t not in rep["targets"]:
            continue
        L += ["", f"## {t} resources", "",
              "| block | LUT | FF | carry | DSP | BRAM | SPRAM | fmax (MHz) | critical path |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for n, r in rep["blocks"].items():
            if "error" in r or t in r.get("errors", {}):
                L.append(f"| {n} | ERROR: {r.get('error') or r['errors'][t]} | | | | | | | |")
                continue
            x = r.get(t)
            if not x:
                continue
            cp = x.get("critical_path")
            cps = (f"{cp['start']} -> {cp['end']}: {cp['segments']} segments, "
                   f"logic {cp['logic_ns']} ns, routing {cp['routing_ns']} ns") if cp else "-"
            L.append(f"| {n} | {_fmt(x['LUT'])} | {_fmt(x['FF'])} | {_fmt(x['carry'])} | "
                     f"{_fmt(x['DSP'])} | {_fmt(x['BRAM'])} | {_fmt(x.get('SPRAM'))} | "
                     f"{_fmt(x.get('fmax_mhz'))} | {cps} |")
    L += ["", "## Summary", ""]
    for t, f in rep.get("fmax", {}).items():
        ok = "meets" if f["worst_mhz"] >= f["floor_mhz"] else "MISSES"
        top = rep["blocks"].get("top", {}).get(t, {})
        if top.get("fmax_mhz"):
            cp = top.get("critical_path") or {}
            tok = "meets" if top["fmax_mhz"] >= f["floor_mhz"] else "MISSES"
            L.append(f"- **fmax of the unit (top, whole hierarchy) on {f['device']}: "
                     f"{top['fmax_mhz']} MHz** ({tok} the {f['floor_mhz']} MHz floor; goal "
                     f"{f['goal_mhz']} MHz). Critical path: {cp.get('start')} -> "
                     f"{cp.get('end')}, {cp.get('segments')} segments, logic "
                     f"{cp.get('logic_ns')} ns, routing {cp.get('routing_ns')} ns.")
        L.append(f"- fmax on {f['device']}: worst block `{f['worst_block']}` "
                 f"{f['worst_mhz']} MHz ({ok} the {f['floor_mhz']} MHz floor; goal "
                 f"{f['goal_mhz']} MHz, constraint {f['goal_mhz']} MHz).")
    s = rep.get("area_share")
    cfg = rep["reference"]["config"]
    pe = ("bf16 x bf16 MACs with fp32 accumulators" if reference_kind(cfg) == "bf16" else
          f"int{cfg.get('a_bits', 8)} MACs with {cfg.get('acc_bits', 32)}-bit accumulators")
    L.append(f"- Reference array: {cfg['rows']} x {cfg['cols']} {pe}, output stationary, with "
             f"input skew registers; no SRAM counted ({cfg.get('why', '')}).")
    if s:
        L.append(f"- **Area share (logic)**: {100 * s['logic_share']:.2f}% "
                 f"({s['unit_logic_transistors']:,} of "
                 f"{s['unit_logic_transistors'] + s['reference_logic_transistors']:,} "
                 f"transistors; unit = {s['basis']}; paper anchor 2.4%).")
        L.append(f"- Unit SRAM: {s['unit_sram_bits']:,} bits; counting it at "
                 f"{rep['sram_transistors_per_bit']}T/bit against the array's logic only: "
                 f"{100 * s['share_with_unit_sram_vs_array_logic']:.2f}% (an upper bound: the "
                 f"host's own SRAM is not counted).")
        if s.get("other_kind"):
            o = s["other_kind"]
            L.append(f"- Against a {o['array']} {o['kind']} array instead "
                     f"({o['reference_logic_transistors']:,} logic transistors): "
                     f"{100 * o['logic_share']:.2f}%.")
        if s.get("sensitivity"):
            L.append(f"- Logic share against other square {reference_kind(cfg)} arrays: "
                     + ", ".join(f"{k}: {100 * v['logic_share']:.2f}%"
                                 for k, v in s["sensitivity"].items()))
    else:
        L.append("- Area share: not available (no block synthesised).")
    h = rep.get("hiding")
    if h:
        sh = h["shape"]
        L.append(f"- **Hiding** ({sh['F']}x{sh['H']}x{sh['W']} = {sh['N']:,} tokens, "
                 f"{sh['heads']} heads x {sh['head_dim']}, R = {h['R']}, quota {h['quota']} "
                 f"per round, r = {h['r']:,}): matcher {h['matcher_cycles']:,} cycles (R = 0: "
                 f"{h['matcher_cycles_R0']:,}) vs attention QK^T + AV on {h['array']} "
                 f"{h['attention_cycles']:,} cycles: ratio **{h['ratio']:.3f}** "
                 f"({'hidden' if h['hidden'] else 'NOT hidden'}). Against the attention on "
                 f"the {sh['N'] - h['r']:,} kept tokens only: {h['ratio_vs_reduced']:.3f}.")
        L.append("- Hiding ratio against other arrays (full attention): " + ", ".join(
            f"{k}: {v['ratio']:.3f}" for k, v in h["sensitivity"].items()))
        L.append("- Matcher passes (incremental: pass k > 0 compares the remaining src only "
                 "with the dst promoted in pass k-1): " + "; ".join(
                     f"n_src {p['n_src']:,} x new dst {p['new']:,} (of {p['n_dst']:,}): "
                     f"engine {p['engine']:,}, scans {p['overhead']:,}"
                     for p in h["matcher"]["passes"])
                 + f"; load {h['matcher']['load']:,}, init {h['matcher']['init']:,}, select "
                 f"{h['matcher']['select']:,}, map {h['matcher']['map']:,}.")
        c = h.get("calibration")
        if c:
            cfg = c["call"]["config"]
            L.append(f"- Cycle model calibrated on the RTL-measured matcher call "
                     f"({cfg['F']}x{cfg['H']}x{cfg['W']} tokens, D {cfg['D']}, P {cfg['P']}, "
                     f"L {cfg['L']}, R {cfg['R']}, quota {cfg['quota']}, r {cfg['r']}): "
                     + ", ".join(f"{k} {v['model']:,} vs RTL {v['rtl']:,}"
                                 for k, v in c["phases"].items())
                     + f" (largest error {100 * c['max_abs_error']:.2f}%).")
    errs = [n for n, r in rep["blocks"].items() if "error" in r or r.get("errors")]
    if errs:
        L.append(f"- Errors in: {', '.join(errs)} (see the tables and logs/).")
    runs = rep.get("tool_runs") or []
    if runs:
        total = sum(r["seconds"] for r in runs)
        L += ["", "## Where the time went", "",
              f"{len(runs)} tool runs this time ({total:,.0f} s of tool time in "
              f"{rep.get('flow_seconds')} s of wall time); results of earlier runs come from "
              "the cache (`build/synth/cache`, keyed by the SHA-256 of Verilog, script and "
              "tool version). Runs over 5 s:", "",
              "| run | tool | seconds | status |", "|---|---|---:|---|"]
        L += [f"| {r['label']} | {r['tool']} | {r['seconds']:,.1f} | {r['status']} |"
              for r in runs if r["seconds"] > 5]
    L.append("")
    return "\n".join(L)


def chart(rep: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # Each block's own share of the unit: its figures (its glue for a block holding others)
    # times its instances in the unit, so the bars add up to the unit.
    names, logic, sram = [], [], []
    inst = rep.get("instances") or {}
    for n, r in rep["blocks"].items():
        own = r.get("glue") or r
        if "transistors_logic" not in own or not inst.get(n):
            continue
        names.append(f"{n} glue" if r.get("glue") else n)
        logic.append(own["transistors_logic"] * inst[n])
        sram.append(own.get("transistors_sram", 0) * inst[n])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    y = range(len(names))
    a1.barh(list(y), logic, label="logic")
    a1.barh(list(y), sram, left=logic, label=f"SRAM ({rep['sram_transistors_per_bit']}T/bit)")
    a1.set_yticks(list(y), names)
    a1.set_xlabel("transistors (Yosys stat -tech cmos)")
    a1.set_title(f"{rep['preset']}: unit by block")
    a1.legend(fontsize=8)
    u = rep["unit"].get("transistors_logic", 0)
    ref = rep["reference"]["logic_transistors"]
    cfg = rep["reference"]["config"]
    a2.bar(["unit logic", f"ref array {cfg['rows']}x{cfg['cols']}"], [u, ref],
           color=["tab:orange", "tab:gray"])
    if rep.get("area_share"):
        a2.set_title(f"logic share {100 * rep['area_share']['logic_share']:.2f}%")
    a2.set_yscale("log")
    a2.set_ylabel("transistors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ecp5-default", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--target", default=None,
                    help="generic, ice40, ecp5 or all (default: per preset)")
    ap.add_argument("--block", action="append", help="only this block (repeatable)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--pnr", action="store_true", help="place and route on every FPGA target")
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--pnr-blocks", default=None,
                    help="comma-separated blocks to place and route, or 'all' (default: "
                         + "; ".join(f"{k}: {','.join(v)}" for k, v in
                                     DEFAULT_PNR_BLOCKS.items())
                         + "; the top is placed and routed as its whole hierarchy)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        if args.preset not in PRESETS:
            raise ParamError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
        if args.target == "all":
            targets = TARGETS
        elif args.target:
            targets = (args.target,) if args.target == "generic" else ("generic", args.target)
        else:
            targets = None
        pnr = True if args.pnr else (False if args.no_pnr else None)
        spec = args.pnr_blocks
        if spec is None:
            spec = ",".join(DEFAULT_PNR_BLOCKS.get(HOME_DEVICE.get(args.preset), ("top",)))
        pnr_blocks = None if spec == "all" else [b for b in spec.split(",") if b]
        run(args.preset, targets, out_dir=args.out, blocks=args.block, jobs=args.jobs,
            timeout=args.timeout, use_cache=not args.no_cache, pnr=pnr, pnr_blocks=pnr_blocks)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
