"""Every core test runs against the compiled engine and its pure-Python twin."""

import pytest

from core import Ledger
from core.reference import Ledger as ReferenceLedger

ENGINES = {"compiled": Ledger, "reference": ReferenceLedger}


@pytest.fixture(params=sorted(ENGINES), ids=sorted(ENGINES))
def make_ledger(request):
    return ENGINES[request.param]


@pytest.fixture
def ledger(make_ledger):
    return make_ledger(shards=8)
