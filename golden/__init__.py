"""NumPy golden model of ORBIS token reduction (no amaranth or cocotb imports)."""

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all
from . import baselines, video  # noqa: F401  (golden.baselines, golden.video)

__all__ = list(_core_all)
