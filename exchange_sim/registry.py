"""The simulator's cmdlets: ``REGISTRY`` (lower-case name -> ``binding.CmdletSpec``), holding every handler module's.

The handler modules (``cmdlets_*.py``) register into ``binding.REGISTRY`` with ``@cmdlet`` when imported. They
import ``call`` for what a handler sees, never ``model``; ``model`` looks cmdlets up here. So the imports run one
way: model -> registry -> cmdlets_* -> binding, call.
"""
from __future__ import annotations

from . import cmdlets_default, cmdlets_exchange, cmdlets_transport, cmdlets_um, cmdlets_windows
from .binding import REGISTRY

HANDLER_MODULES = (cmdlets_default, cmdlets_exchange, cmdlets_transport, cmdlets_um, cmdlets_windows)

__all__ = ["HANDLER_MODULES", "REGISTRY"]
