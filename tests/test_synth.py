# amaranth: UnusedElaboratable=no
"""Smoke test of ``make synth`` on a tiny configuration, and checks of its helpers."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from hw import gen
from hw.params import default_quota, preset
from tools import cyclemodel, synth

TINY = preset("ice40-small", N_max=16, D=4, B=4, P=2, L=2, Dx=2, Wx=8, Lx=2, NB=8,
              hist_mant=1, R=1)
TINY_REF = dict(rows=2, cols=2, a_bits=8, b_bits=8, acc_bits=32, why="smoke test")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    # Generic target only: the FPGA mappers take 10-30 s per block even at this size (they
    # run in the slow test below).
    out = tmp_path_factory.mktemp("synth") / "tiny"
    rep = synth.run("ice40-small", targets=("generic",), out_dir=out, params=TINY,
                    reference=TINY_REF, jobs=2, use_cache=False, pnr=False,
                    timeout=600, heartbeat=60)
    return out, rep


def test_report_files(tiny_report):
    out, rep = tiny_report
    assert (out / "report.md").read_text().startswith("# Synthesis report")
    assert json.loads((out / "report.json").read_text())["preset"] == "ice40-small"
    assert (out / "area.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_block_present_and_positive(tiny_report):
    _, rep = tiny_report
    assert set(rep["blocks"]) == set(gen.BLOCKS)
    for name, row in rep["blocks"].items():
        assert "error" not in row and "generic" not in row.get("errors", {}), (name, row)
        assert row["cells"] > 0 and row["transistors_logic"] > 0, name


def test_reference_array_counts(tiny_report):
    _, rep = tiny_report
    ref = rep["reference"]["units"]
    assert ref["ref.pe"]["count"] == 4 and ref["ref.skew"]["count"] == 2
    # Flip-flops a PE must have: a and b forwarding (8 + 8), valid and first (2), accumulator
    # (32). A skew stage: operand (8) and its two flags.
    assert ref["ref.pe"]["ff_bits"] == 4 * 50
    assert ref["ref.skew"]["ff_bits"] == 2 * 10
    total = sum(r["transistors_logic"] for r in ref.values())
    assert rep["reference"]["logic_transistors"] == total


def test_unit_sums_and_share(tiny_report):
    _, rep = tiny_report
    blocks = rep["blocks"]
    # Composite blocks are their glue plus their children, each child synthesised once.
    assert blocks["top"]["children"] == dict(matcher=1, mapbuf=1, merger=1, unmerger=1)
    assert blocks["matcher"]["children"] == dict(quantizer=1, similarity=1, dstinit=1,
                                                 histogram=1, threshold=1)
    for n in ("top", "matcher"):
        row = blocks[n]
        for k in ("transistors_logic", "mem_bits", "ff_bits"):
            assert row[k] == row["glue"][k] + sum(
                c * blocks[ch][k] for ch, c in row["children"].items()), (n, k)
        assert row["glue"]["transistors_logic"] > 0
    assert rep["unit"]["transistors_logic"] == blocks["top"]["transistors_logic"]
    # Every block appears once in the unit; the breakdown adds up to the top.
    assert rep["instances"] == {n: 1 for n in blocks}
    own = sum((r.get("glue") or r)["transistors_logic"] for r in blocks.values())
    assert own == blocks["top"]["transistors_logic"]
    s = rep["area_share"]
    u, a = s["unit_logic_transistors"], s["reference_logic_transistors"]
    assert math.isclose(s["logic_share"], u / (u + a))


def test_hierarchical_sum_matches_whole_top(tiny_report, tmp_path):
    """The top's glue + children figure against the whole hierarchy synthesised directly.

    The hierarchical sum is an upper bound: a block synthesised alone keeps logic its parent
    leaves unused (cycle counters, status outputs), which the whole synthesis removes. At
    this tiny size that is about a quarter of the logic (less at real sizes, where lanes and
    memories dominate)."""
    _, rep = tiny_report
    text = gen.to_verilog(gen.build_block("top", TINY), "orbis_top")
    v, _ = synth.dedupe_verilog(text, "orbis_top")
    ctx = synth.Ctx(cache=tmp_path / "cache", logs=tmp_path, timeout=600, use_cache=False)
    whole = synth.run_generic(ctx, "generic top whole", v, "orbis_top")
    top = rep["blocks"]["top"]
    assert 0.98 <= top["mem_bits"] / whole["mem_bits"] <= 1.02
    assert 0.98 <= top["transistors_logic"] / whole["transistors_logic"] <= 1.4
    assert 0.98 <= top["ff_bits"] / whole["ff_bits"] <= 1.4


def test_blackbox_children_ports():
    """A blackboxed child keeps every port of its signature (clk, rst and each member)."""
    from hw.gen import BLOCKS, block_class
    classes = {block_class(n): n for n in BLOCKS}
    comp = gen.build_block("matcher", TINY)
    with synth.blackbox_children(comp, TINY, classes) as found:
        text = gen.to_verilog(comp, "orbis_matcher")
    names = [n for n, _ in found]
    assert sorted(names) == sorted(["quantizer", "similarity", "dstinit", "histogram",
                                    "threshold"])
    eng = dict(found)["similarity"]
    widths = {n: w for _, n, w in eng}
    ref = gen.build_block("similarity", TINY)
    ref._MustUse__silence = True              # only its signature is read
    ports = gen.port_list(ref)
    assert all(widths[p["name"]] == p["width"] for p in ports)
    assert "orbis_bb_similarity" in text
    stub = synth.blackbox_stub("similarity", eng)
    assert stub.startswith("(* blackbox *)") and "input clk;" in stub


def test_engine_lanes_are_one_module():
    """The engine's P lanes dedupe to one module definition (synthesised once)."""
    p = TINY.with_(P=4)
    text = gen.to_verilog(gen.build_block("similarity", p), "orbis_similarity")
    v, info = synth.dedupe_verilog(text, "orbis_similarity")
    assert len(re.findall(r"^module .*lane", text, re.M)) == 4
    assert len(re.findall(r"^module .*lane", v, re.M)) == 1


def test_dedupe_keeps_the_design(tmp_path):
    """The deduplicated array synthesises to the same cells as Amaranth's original text."""
    from hw.refarray import ReferenceArray
    text = gen.to_verilog(ReferenceArray(rows=3, cols=3), "orbis_ref")
    deduped, info = synth.dedupe_verilog(text, "orbis_ref")
    assert info["modules"] == 1 + 9 + 3 + 3 and info["unique"] < info["modules"]
    stats = []
    for name, v in (("orig", text), ("dedup", deduped)):
        (tmp_path / f"{name}.v").write_text(v)
        subprocess.run([synth.tool("yosys"), "-q", "-p",
                        f"read_verilog -sv {name}.v; synth -top orbis_ref; "
                        f"tee -q -o {name}.json stat -json"], cwd=tmp_path, check=True)
        stats.append(json.loads((tmp_path / f"{name}.json").read_text())["design"])
    # Same gates; only the names of the (merged) submodule types differ.
    gates = [{k: v for k, v in st["num_cells_by_type"].items() if k.startswith("$")}
             for st in stats]
    assert gates[0] == gates[1] and sum(gates[0].values()) > 0


@pytest.mark.slow
def test_harness_place_and_route(tmp_path):
    """The nextpnr path gives an fmax for the tiniest unit (a skew register)."""
    from hw.refarray import SkewStage
    v = gen.to_verilog(SkewStage(bits=4), "orbis_skew")
    ctx = synth.Ctx(cache=tmp_path / "cache", logs=tmp_path, timeout=600, use_cache=False)
    r = synth.run_fpga(ctx, "ice40 skew", v, "orbis_skew", "ice40", pnr=True)
    assert r["resources"]["FF"] == 6
    assert r["pnr"]["fmax_mhz"] > 48


def test_harness_ports():
    ports = [("input", "clk", 1), ("input", "rst", 1), ("input", "a", 3), ("output", "y", 2)]
    h = synth.harness_verilog("blk", ports)
    assert ".\\a (sin[4:2])" in h and ".\\y (o[1:0])" in h and ".clk(clk)" in h


def test_harness_keeps_every_output(tmp_path):
    """The folded capture chain loses no output bit: a block whose 7 outputs are registers
    keeps all 7 of them after synthesis only if every output reaches ``dout``."""
    ports = [("input", "clk", 1), ("input", "rst", 1), ("input", "a", 4), ("output", "y", 7)]
    assert synth.harness_ffs(ports) == 5 + 1 + 3      # chain (rst, a, din) + 3 capture regs
    (tmp_path / "d.v").write_text(
        "module blk(input clk, input rst, input [3:0] a, output reg [6:0] y);\n"
        "  always @(posedge clk) y <= {a ^ {4{rst}}, a[0] & a[1], a[2] | a[3], ^a};\n"
        "endmodule\n" + synth.harness_verilog("blk", ports))
    subprocess.run([synth.tool("yosys"), "-q", "-p", "read_verilog -sv d.v; "
                    "synth -flatten -top orbis_harness; tee -q -o s.json stat -json"],
                   cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "s.json").read_text())["design"]["num_cells_by_type"]
    assert sum(v for k, v in cells.items() if "DFF" in k.upper()) == \
        synth.harness_ffs(ports) + 7


def test_cycle_model_formula():
    # 4 x 4 x 4 grid, windows of 8: 8 dst, 56 src; one pass with P = 3, D/L = 2.
    m = cyclemodel.matcher_cycles(F=4, H=4, W=4, D=8, P=3, L=4, R=0, quota=0, NB=16,
                                  e_pipe=5, c_pass=7)
    assert m["passes"] == [dict(n_dst=8, new=8, n_src=56, engine=56 * 3 * 2 + 5,
                                bin=64 + 16 + 1 + 7, promote=0, overhead=64 + 16 + 1 + 7)]
    # check 6, load N*C + 4, init 8 windows at DstInit's 9 cycles (> C + 1) + 8, bin
    # N + NB + 1 (threshold input register) + c_pass, select N + 7, map N + 7
    assert m["total"] == 6 + (64 * 2 + 4) + (8 * 9 + 8) + (56 * 3 * 2 + 5) + (64 + 16 + 1 + 7) \
        + (64 + 7) + (64 + 7)
    # Incremental rounds: pass k > 0 compares the remaining src with the new dst only;
    # a round promotes quota src, bounded by the src that stay kept (56 - r).
    m = cyclemodel.matcher_cycles(F=4, H=4, W=4, D=8, P=3, L=4, R=2, quota=4, NB=16, r=50,
                                  e_pipe=0, c_pass=0)
    assert [(p["n_dst"], p["new"], p["n_src"]) for p in m["passes"]] == [
        (8, 8, 56), (12, 4, 52), (14, 2, 50)]
    assert m["engine"] == [56 * 3 * 2, 52 * 2 * 2, 50 * 1 * 2]
    assert [p["promote"] for p in m["passes"]] == [64, 64, 0]
    # No new dst: the pass is skipped.
    m = cyclemodel.matcher_cycles(F=4, H=4, W=4, D=8, P=3, L=4, R=1, quota=0, NB=16)
    assert m["engine"][1] == 0
    assert cyclemodel.attention_cycles(n_q=10, n_k=10, head_dim=4, heads=2, rows=2,
                                       cols=2) == 2 * 2 * 10 * 10 * 4 // 4


def test_cycle_model_calibration():
    """The default constants reproduce the RTL-measured matcher call within 0.5%."""
    cal = cyclemodel.calibration()
    assert set(cal) >= {"load", "init", "datm", "select", "map", "total", "engine[0]"}
    assert all(abs(v["error"]) < 0.005 for v in cal.values()), cal


def test_hiding_cogvideox():
    p = preset("cogvideox-2b")
    h = synth.hiding("cogvideox-2b", p, synth.REFERENCE["cogvideox-2b"])
    assert h["shape"]["N"] == 17550 and h["n_windows"] == 7 * 15 * 23
    assert h["R"] == p.R and h["quota"] == default_quota(17550)
    assert len(h["matcher"]["passes"]) == p.R + 1
    assert h["attention_cycles"] == math.ceil(30 * 2 * 17550 ** 2 * 64 / (128 * 128))
    assert h["ratio"] == h["matcher_cycles"] / h["attention_cycles"]


@pytest.mark.slow
def test_fpga_flow_tiny(tmp_path):
    """iCE40 resources for every block and place and route of the whole top (slow)."""
    rep = synth.run("ice40-small", targets=("generic", "ice40"), out_dir=tmp_path / "t",
                    params=TINY, reference=TINY_REF, jobs=2, use_cache=False,
                    pnr_blocks=["top"], timeout=900, heartbeat=60)
    for name, row in rep["blocks"].items():
        assert row["ice40"]["LUT"] > 0, name
    top = rep["blocks"]["top"]["ice40"]
    assert top["LUT"] == rep["blocks"]["top"]["glue_ice40"]["LUT"] + sum(
        rep["blocks"][c]["ice40"]["LUT"] for c in ("matcher", "mapbuf", "merger", "unmerger"))
    assert top["fmax_mhz"] > 0 and top["critical_path"]["segments"] > 0
    assert 0.7 <= top["whole"]["LUT"] / top["LUT"] <= 1.3
