"""Fixtures of the topology tests: Kamailio, two gateway nodes and Redis, started once for the
package, and put back together (dead nodes restarted, Redis started) before each test."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.scale.topology import Topology

pytestmark = pytest.mark.scale

REQUIRED = {"kamailio": "kamailio", "sipp": "sip-tester", "redis-server": "redis-server"}


@pytest.fixture(scope="package")
def topology() -> Iterator[Topology]:
    for binary, package in REQUIRED.items():
        if shutil.which(binary) is None:
            why = f"{binary} is not installed (Debian package {package}, in the Makefile's TEST_APT)"
            if os.environ.get("MAKELEVEL") or os.environ.get("CI"):
                # `make test` (and so .ci/run) installed TEST_APT: a missing daemon is a broken
                # setup, not a reason to pass without testing several nodes
                pytest.fail(why, pytrace=False)
            pytest.skip(why)
    keep = os.environ.get("SCALE_TEST_DIR")  # keep the daemons' logs there (debugging)
    with tempfile.TemporaryDirectory(prefix="voicegw-scale-") as directory:
        # the edge's flood limits, low enough for a test's flood to meet them in a few seconds
        topo = Topology(Path(keep or directory), nodes=2,
                        edge_defines={"PIKE_DENSITY": "16", "EDGE_PIPE": '"1:TAILDROP:30"'})
        try:
            yield topo
        finally:
            topo.close()


@pytest.fixture
def topo(topology: Topology) -> Topology:
    """The package's topology, whole again: Redis up, every node running."""
    topology.redis.start()
    dead = [n for n in topology.nodes if not n.alive]
    for node in dead:
        node.start()
    for node in dead:
        node.wait_ready()
    return topology
