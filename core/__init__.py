"""fuelswitch's hold/settle core: the compiled engine, with its pure-Python twin in core.reference."""

from core._ledger import Ledger
from core.types import LEGS_MAX, HoldInfo, HoldState, JournalEntry, Kind, Status

__all__ = ["LEGS_MAX", "HoldInfo", "HoldState", "JournalEntry", "Kind", "Ledger", "Status"]
