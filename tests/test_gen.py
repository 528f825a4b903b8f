"""`make verilog`: deterministic output, manifest with ports, lint-clean, clear errors."""

import json

import pytest

from hw import preset
from hw.gen import BLOCKS, generate, main
from tools.lint import lint_file


def test_verilog_deterministic_with_manifest(tmp_path):
    p = preset("ice40-small")
    a = generate(p, tmp_path / "a", ["top", "merger"], log=lambda s: None)
    b = generate(p, tmp_path / "b", ["top", "merger"], log=lambda s: None)
    for name in ("top", "merger"):
        ta = (tmp_path / "a" / a["blocks"][name]["file"]).read_text()
        tb = (tmp_path / "b" / b["blocks"][name]["file"]).read_text()
        assert ta == tb
        assert "/work" not in ta and "/tmp" not in ta and "/home" not in ta
        assert f"module orbis_{name}(" in ta
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["params"]["N_max"] == p.N_max
    ports = {q["name"]: q for q in man["blocks"]["top"]["ports"]}
    # Stream ports flatten with "__"; widths follow the parameters.
    assert ports["x__payload"]["width"] == p.Lx * p.Wx
    assert ports["x__valid"]["dir"] == "input" and ports["reduced__valid"]["dir"] == "output"
    assert ports["guide__payload"]["width"] == p.L * 16
    assert ports["map__payload"]["width"] == 2 + 2 * p.idx_bits


def test_every_block_lints_clean(tmp_path):
    man = generate(preset("ice40-small"), tmp_path, list(BLOCKS), log=lambda s: None)
    for name, info in man["blocks"].items():
        assert lint_file(tmp_path / info["file"], info["module"]) == [], name


def test_lint_catches_a_real_problem(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b, output c);\n"
                   "  assign b = a;\n  assign b = ~a;\nendmodule\n")
    assert lint_file(bad, "bad")


def test_unknown_preset_is_a_clear_error(capsys):
    assert main(["--preset", "nope", "--out", "/tmp/unused"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
