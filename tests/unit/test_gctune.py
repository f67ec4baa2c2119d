"""Services freeze what start-up built and collect young objects less often (in a child process, so the
test runner's own collector is left as it is)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, json
import grpc, aiohttp.web  # a service's start-up heap, roughly
from servicekit.gctune import GEN0_THRESHOLD, settle_after_startup
before = gc.get_freeze_count()
settle_after_startup()
print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold(), GEN0_THRESHOLD]))
"""


def test_startup_objects_are_frozen_and_young_collections_are_rarer():
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    before, frozen, threshold, gen0 = json.loads(out)
    assert before == 0 and frozen > 10_000  # the imported modules' objects, out of every collection
    assert threshold == [gen0, 10, 10] and gen0 > 700  # Python's default first-generation threshold is 700
