"""Two processes promoting at once leave a consistent registry: no lost alias move, an intact
hash chain, `previous` always the production it replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from flywheel.registry.gates import evaluate_version
from tests.deploy.conftest import GATES, make_env

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_promoting_at_once(tmp_path, registry, reach_policies):
    v1, _ = registry.register(reach_policies["good"])
    v2, _ = registry.register(reach_policies["twin"])
    for v in (v1.version, v2.version):  # evaluate once here so the processes race on moves
        evaluate_version(registry, v, registry.load(v), "reach", make_env, GATES)
    start = tmp_path / "go"
    rounds = 8
    cmd = [
        sys.executable,
        "-m",
        "tests.deploy.promoter_proc",
        str(registry.root),
        str(start),
        str(rounds),
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "1", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            [*cmd, "2", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    start.touch()  # both imported: they now race from the same instant
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs += [json.loads(line) for line in out.splitlines()]
    assert len(outs) == 2 * rounds
    assert registry.verify() == []
    entries = registry.audit_entries()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    promoted = [o for o in outs if o["decision"] == "promoted"]
    moves = [e for e in entries if e["op"] == "promote" and e["moves"]]
    assert len(moves) == len(promoted) >= 2  # every reported promotion is in the log, once
    assert sorted(o["audit_seq"] for o in promoted) == [e["seq"] for e in moves]
    # each promotion replaced the production it was gated against, and saved it as previous
    prod = None
    for e in moves:
        assert e["incumbent"] == prod
        m = {x["alias"]: x for x in e["moves"]}
        assert m["production"]["from"] == prod and m["production"]["to"] == e["version"]
        if prod is not None:
            assert m["previous"]["to"] == prod
        prod = e["version"]
    assert registry.aliases()["production"] == prod
    assert all(o["decision"] in ("promoted", "unchanged") for o in outs)
    # and they really ran at the same time: promotions of the two processes overlapped
    a, b = ([o for o in outs if o["pid"] == p.pid] for p in procs)
    assert any(x["t0"] < y["t1"] and y["t0"] < x["t1"] for x in a for y in b)
