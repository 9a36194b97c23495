"""Registry: versions, refusals of unsafe bundles, gates, force, rollback, the audit log."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from flywheel import __version__
from flywheel.policies import BundleError
from flywheel.provenance import code_version
from flywheel.registry import GateConfig, Registry, RegistryError, promote, rollback
from flywheel.registry import promotion as promotion_mod
from flywheel.registry.gates import evaluate_version
from tests.deploy.conftest import GATES, make_env, toy_bundle


def test_register_numbers_versions_copies_and_dedupes(tmp_path, registry):
    a = toy_bundle(tmp_path / "a", seed=0)
    b = toy_bundle(tmp_path / "b", seed=1)
    r1, new1 = registry.register(a, why="first")
    r2, new2 = registry.register(b)
    again, new3 = registry.register(a)
    assert (r1.version, r2.version, again.version) == (1, 2, 1) and (new1, new2, new3) == (
        True,
        True,
        False,
    )
    assert registry.aliases() == {"candidate": 2}
    copy = registry.bundle_path(1)
    assert copy != a and (copy / "weights.safetensors").is_file()
    assert not (copy / "weights.safetensors").stat().st_mode & 0o222  # read-only files
    rec = registry.record(1)
    assert rec.schema_hash.startswith("sha256:") and rec.normalizer_hash.startswith("sha256:")
    assert rec.task == "toy" and rec.lineage["algorithm"] == "toy" and rec.lineage["code_version"]
    doc = registry.summary()
    assert [v["version"] for v in doc["versions"]] == [1, 2] and doc["aliases"] == {"candidate": 2}
    e = registry.audit_entries()[0]
    assert e["op"] == "register" and e["why"] == "first" and e["who"] and e["time"].endswith("Z")
    assert registry.verify() == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_names_the_git_commit_and_uncommitted_changes(tmp_path):
    """What the registry's lineage `code_version` carries (via the bundle's environment)."""
    assert code_version(tmp_path) == {"flywheel": __version__, "git_sha": None, "git_dirty": None}
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    assert code_version(repo / "pkg")["git_sha"] is None  # untracked, no commit yet
    git("add", ".")
    git("commit", "-q", "-m", "one")
    (repo / "pkg" / "other").mkdir()  # a fresh path: the lookup is cached per folder
    (repo / "pkg" / "other" / "m.py").write_text("y = 2\n")
    git("add", ".")
    git("commit", "-q", "-m", "two")
    head = git("rev-parse", "HEAD")
    assert code_version(repo / "pkg" / "other") == {
        "flywheel": __version__,
        "git_sha": head,
        "git_dirty": False,
    }
    (repo / "pkg" / "mod.py").write_text("x = 3\n")
    assert code_version(repo) == {"flywheel": __version__, "git_sha": head, "git_dirty": True}


def test_pickled_and_tampered_bundles_are_refused(tmp_path, registry):
    pickled = toy_bundle(tmp_path / "p")
    torch.save({"w": torch.zeros(2)}, pickled / "model.pt")
    with pytest.raises(BundleError, match="refusing pickle"):
        registry.register(pickled)
    tampered = toy_bundle(tmp_path / "t")
    schema = json.loads((tampered / "schema.json").read_text())
    schema["action"]["high"] = 100.0
    (tampered / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(BundleError, match=r"schema\.json: content hash mismatch"):
        registry.register(tampered)
    assert registry.version_numbers() == [] and registry.audit_entries() == []


def test_a_registered_copy_changed_later_is_refused_everywhere(tmp_path, registry):
    registry.register(toy_bundle(tmp_path / "a", task="reach", control_hz=20.0))
    w = registry.bundle_path(1) / "weights.safetensors"
    w.chmod(0o644)
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hash mismatch"):
        registry.load(1)
    assert any("v1" in p and "hash mismatch" in p for p in registry.verify())
    rep = promote(registry, 1, "staging", make_env=make_env, config=GATES, force=True, why="try")
    assert rep.decision == "refused" and [g.name for g in rep.gates] == ["integrity"]
    assert "cannot override integrity" in rep.reason and "staging" not in registry.aliases()


def test_schema_must_match_the_target_task(tmp_path, registry):
    registry.register(toy_bundle(tmp_path / "a", task="reach", control_hz=20.0))
    rep = promote(registry, 1, "staging", make_env=make_env, config=GATES)
    gate = rep.gates[0]
    assert rep.decision == "refused" and gate.name == "integrity" and not gate.overridable
    assert any(
        "observation 'ee_pos'" in p or "needs observation" in p for p in gate.figures["problems"]
    )
    assert any("action shape" in p for p in gate.figures["problems"])


def test_worse_candidate_is_refused_and_production_does_not_move(registry, reach_policies):
    good, _ = registry.register(reach_policies["good"])
    worse, _ = registry.register(reach_policies["worse"])
    first = promote(registry, good.version, "production", make_env=make_env, config=GATES)
    assert first.decision == "promoted", first.reason
    assert registry.aliases()["production"] == good.version
    rep = promote(registry, worse.version, "production", make_env=make_env, config=GATES)
    assert rep.decision == "refused" and not rep.moved
    ev = next(g for g in rep.gates if g.name == "evaluation")
    f = ev.figures
    assert not ev.passed and f["candidate"]["episodes"] == 30 == f["incumbent"]["episodes"]
    assert (
        f["candidate"]["success_rate"] < f["incumbent"]["success_rate"]
        and f["incumbent"]["success_rate"] > 0.2
    )
    assert f["difference_ci95"][1] < 0  # clearly worse, not noise
    assert len(f["candidate"]["success_ci95"]) == 2
    lat = next(g for g in rep.gates if g.name == "latency")
    assert lat.passed and lat.figures["p99_ms"] <= lat.figures["budget_ms"]
    assert registry.aliases()["production"] == good.version and "previous" not in registry.aliases()
    last = registry.audit_entries()[-1]
    assert last["op"] == "promote_refused" and last["moves"] == [] and last["gates"]
    # staging uses the same comparison
    assert (
        promote(registry, worse.version, "staging", make_env=make_env, config=GATES).decision
        == "refused"
    )

    with pytest.raises(RegistryError, match="needs --reason"):
        promote(registry, worse.version, "production", make_env=make_env, config=GATES, force=True)
    forced = promote(
        registry,
        worse.version,
        "production",
        make_env=make_env,
        config=GATES,
        force=True,
        why="operator test of --force",
    )
    assert forced.decision == "forced" and forced.moved
    entry = registry.audit_entries()[-1]
    assert entry["forced"] is True and entry["why"] == "operator test of --force"
    assert registry.aliases()["production"] == worse.version
    assert registry.aliases()["previous"] == good.version

    out = rollback(registry, why="forced one was bad")
    assert out == {
        "production": good.version,
        "rolled_back": worse.version,
        "aliases": registry.aliases(),
        "audit_seq": out["audit_seq"],
    }
    assert registry.aliases()["production"] == good.version and "previous" not in registry.aliases()
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(registry)
    assert registry.verify() == []


def test_too_few_episodes_fail_the_evaluation_gate(registry, reach_policies):
    registry.register(reach_policies["good"])
    cfg = GateConfig(episodes=5, min_episodes=30, latency_budget_ms=50.0, latency_samples=50)
    rep = promote(registry, 1, "staging", make_env=make_env, config=cfg)
    ev = next(g for g in rep.gates if g.name == "evaluation")
    assert rep.decision == "refused" and not ev.passed and "too few" in ev.reason


def test_latency_budget_is_enforced(registry, reach_policies):
    registry.register(reach_policies["good"])
    cfg = GateConfig(episodes=30, min_episodes=30, latency_budget_ms=1e-4, latency_samples=50)
    rep = promote(registry, 1, "staging", make_env=make_env, config=cfg)
    lat = next(g for g in rep.gates if g.name == "latency")
    assert rep.decision == "refused" and not lat.passed and lat.figures["p99_ms"] > 1e-4


def test_canary_gate_needs_real_episodes_without_safety_stops(registry, reach_policies):
    registry.register(reach_policies["good"])
    cfg = GateConfig(
        episodes=30, min_episodes=30, latency_budget_ms=50.0, latency_samples=50, canary_episodes=3
    )
    assert promote(registry, 1, "staging", make_env=make_env, config=cfg).decision == "promoted"
    rep = promote(registry, 1, "production", make_env=make_env, config=cfg)
    canary = next(g for g in rep.gates if g.name == "canary")
    assert rep.decision == "refused" and canary.figures["episodes"] == 0
    for _ in range(3):
        registry.record_episode(1, {"steps": 20, "safety_stops": 0, "success": True})
    registry.record_episode(1, {"steps": 5, "safety_stops": 1, "success": False})
    rep = promote(registry, 1, "production", make_env=make_env, config=cfg)
    assert rep.decision == "refused" and "1 safety stops" in rep.reason
    registry2 = Registry(registry.root)
    registry2.episodes_path(1).write_text(
        "".join(json.dumps({"steps": 20, "safety_stops": 0}) + "\n" for _ in range(3))
    )
    assert promote(registry2, 1, "production", make_env=make_env, config=cfg).decision == "promoted"


def test_promotion_reruns_gates_when_production_moves_meanwhile(
    registry, reach_policies, monkeypatch
):
    good, _ = registry.register(reach_policies["good"])
    twin, _ = registry.register(reach_policies["twin"])
    worse, _ = registry.register(reach_policies["worse"])
    registry.move({"production": worse.version}, op="test", why="setup")
    real = promotion_mod.run_gates
    seen = []

    def racing(reg, version, incumbent, to, **kw):
        seen.append(incumbent)
        if len(seen) == 1:  # another operator promotes `good` while our gates run
            reg.move(
                {"production": good.version, "previous": worse.version}, op="promote", why="other"
            )
        return real(reg, version, incumbent, to, **kw)

    monkeypatch.setattr(promotion_mod, "run_gates", racing)
    rep = promote(registry, twin.version, "production", make_env=make_env, config=GATES)
    assert seen == [worse.version, good.version] and rep.attempts == 2
    assert rep.incumbent == good.version and rep.decision == "promoted"  # twin == good: not worse
    assert registry.aliases()["previous"] == good.version
    assert registry.verify() == []


def test_audit_log_is_hash_chained_and_survives_a_torn_line(tmp_path, registry):
    registry.register(toy_bundle(tmp_path / "a"))
    registry.register(toy_bundle(tmp_path / "b", seed=1))
    registry.move({"staging": 1}, op="test", why="x")
    with open(registry.audit_path, "a") as f:
        f.write('{"seq": 4, "half a li')  # a writer killed mid-append
    assert registry.aliases() == {"candidate": 2, "staging": 1}
    registry.move({"staging": 2}, op="test", why="y")
    assert [e["seq"] for e in registry.audit_entries()] == [1, 2, 3, 4]
    assert registry.verify() == []
    lines = registry.audit_path.read_text().splitlines()
    lines[1] = lines[1].replace('"why": "registered"', '"why": "edited"')
    registry.audit_path.write_text("\n".join(lines) + "\n")
    assert any("prev hash" in p for p in registry.verify())


def test_alias_cache_behind_the_log_is_rebuilt(tmp_path, registry):
    registry.register(toy_bundle(tmp_path / "a"))
    registry.aliases_path.write_text(json.dumps({"seq": 0, "aliases": {}}))  # crash before replace
    assert registry.aliases() == {"candidate": 1}
    with pytest.raises(RegistryError, match="no version 7"):
        registry.resolve("v7")
    with pytest.raises(RegistryError, match="points at no version"):
        registry.resolve("production")


def test_eval_results_are_stored_and_reused(registry, reach_policies):
    registry.register(reach_policies["good"])
    b = registry.load(1)
    first = evaluate_version(registry, 1, b, "reach", make_env, GATES)
    calls = []
    second = evaluate_version(registry, 1, b, "reach", lambda t, v: calls.append(1), GATES)
    assert first == second and calls == [] and registry.evals(1)[0]["episodes"] == 30
