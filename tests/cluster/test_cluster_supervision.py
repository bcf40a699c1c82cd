"""The cluster supervises its processes: a crashed node is restarted, `status --json` describes the mesh,
`down` stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.cluster.cluster_support import BIN, Cluster, free_base_port, wait_for


def status(data: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "mycarenet-cluster"), "status", "--data", str(data), "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr.decode()
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_a_killed_node_is_restarted_and_down_stops_everything(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data", free_base_port(), population=50)
    try:
        desc = cluster.up("2026-11-20")
        by_name = {p["name"]: p for p in desc["processes"]}
        assert set(by_name) == {"ehealth", "hub", *(f"oa-{c}" for c in (100, 200, 300, 400, 500, 600, 900))}
        assert desc["tls"]
        assert Path(desc["tls"]["ca"]).is_file()
        victim = by_name["oa-200"]["pid"]
        os.kill(victim, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            now = {p["name"]: p for p in status(cluster.data)["processes"]}
            oa = now["oa-200"]
            ok = oa["pid"] != victim and oa["restarts"] == 1 and oa["health"] == "SERVING"
            return now if ok else None

        now = wait_for(restarted, timeout=60)
        assert now, status(cluster.data)
        assert all(p["health"] == "SERVING" for p in now.values())
        assert all(p["restarts"] == 0 for name, p in now.items() if name != "oa-200")
        pids = [p["pid"] for p in now.values()]

        done = subprocess.run(
            [str(BIN / "mycarenet-cluster"), "down", "--data", str(cluster.data)],
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert cluster.proc is not None
        assert cluster.proc.wait(30) == 0
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"process {pid} still runs after down")
        assert status(cluster.data) == {"up": False}
    finally:
        cluster.down()
