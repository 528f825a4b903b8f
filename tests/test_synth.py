# amaranth: UnusedElaboratable=no
"""Smoke test of ``make synth`` on a tiny configuration, and checks of its helpers."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from hw import gen
from hw.params import preset
from tools import cyclemodel, synth

TINY = preset("ice40-small", N_max=16, D=4, B=4, P=2, L=2, Dx=2, Wx=8, Lx=2, NB=8,
              hist_mant=1, R=1)
TINY_REF = dict(rows=2, cols=2, a_bits=8, b_bits=8, acc_bits=32, why="smoke test")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "tiny"
    rep = synth.run("ice40-small", targets=("generic", "ice40"), out_dir=out, params=TINY,
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
        # The FPGA mapper of the YoWASP build can crash on some netlists (abc9 trap); that
        # must show as an error row for the target, never as a missing block.
        if "ice40" in row.get("errors", {}):
            assert row["errors"]["ice40"], name
        else:
            assert row["ice40"]["LUT"] > 0, name


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
    parts = [n for n in blocks if n != "top"]
    if "top" in blocks:
        # Blocks nest (the matcher holds the engine, the top holds the matcher), so the sum of
        # the blocks over-counts: the top (hierarchy kept) is at least its largest block and
        # at most the sum of all blocks plus glue.
        s = sum(blocks[n]["transistors_logic"] for n in parts)
        big = max(blocks[n]["transistors_logic"] for n in parts)
        assert 0.9 * big <= blocks["top"]["transistors_logic"] <= 1.5 * s
        assert rep["unit"]["transistors_logic"] == blocks["top"]["transistors_logic"]
    elif parts:
        assert rep["unit"]["transistors_logic"] == sum(
            blocks[n]["transistors_logic"] for n in parts)
    if parts:
        s = rep["area_share"]
        u, a = s["unit_logic_transistors"], s["reference_logic_transistors"]
        assert math.isclose(s["logic_share"], u / (u + a))


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


def test_cycle_model_formula():
    # 4 x 4 x 4 grid, windows of 8: 8 dst, 56 src; one pass with P = 3, D/L = 2.
    m = cyclemodel.matcher_cycles(F=4, H=4, W=4, D=8, P=3, L=4, R=0, quota=0, NB=16,
                                  a_tok=1, a_bin=2, pipe=5)
    assert m["passes"] == [dict(n_dst=8, n_src=56, engine=56 * 3 * 2,
                                overhead=64 + 32 + 5)]
    assert m["total"] == 64 * 2 + 8 + (64 + 16) + 56 * 3 * 2 + 64 + 32 + 5
    # A round promotes quota src (bounded by the src that stay kept: 56 - r).
    m = cyclemodel.matcher_cycles(F=4, H=4, W=4, D=8, P=3, L=4, R=2, quota=10, NB=16, r=50)
    assert [p["n_dst"] for p in m["passes"]] == [8, 14, 14]
    assert cyclemodel.attention_cycles(n_q=10, n_k=10, head_dim=4, heads=2, rows=2,
                                       cols=2) == 2 * 2 * 10 * 10 * 4 // 4


def test_hiding_cogvideox():
    h = synth.hiding("cogvideox-2b", preset("cogvideox-2b"), synth.REFERENCE["cogvideox-2b"])
    assert h["shape"]["N"] == 17550 and h["n_windows"] == 7 * 15 * 23
    assert h["attention_cycles"] == math.ceil(30 * 2 * 17550 ** 2 * 64 / (128 * 128))
    assert h["ratio"] == h["matcher_cycles"] / h["attention_cycles"]
