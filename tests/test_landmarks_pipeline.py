"""landmarks-ik in the real multi-process pipeline: the default without POCO weights (said once),
and A/B against POCO (`pipeline ab start inference model=landmarks-ik`) with per-joint
agreement, then B promoted; nothing may leak (the pipeline_env fixture checks)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import native_endpoint, receive_frames, request, wait_for, workers

pytestmark = [pytest.mark.timeout(400)]

NOTICE = "no POCO checkpoint at"


def test_default_without_poco_weights_runs_landmarks_ik_and_says_so_once(run_cli, small_config):
    proc = run_cli("start", "--config", small_config, "--seconds", "6", "workers.inference.params.model=auto",
                   timeout=180)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if NOTICE in ln]
    assert len(said) == 1 and "landmarks-ik" in said[0], proc.stdout + proc.stderr
    assert "UNTRAINED" not in proc.stdout + proc.stderr


def test_ab_against_poco_reports_per_joint_agreement_and_b_takes_over(run_cli, small_config):
    run_cli("start", "--detach", "--config", small_config, timeout=120, check=True)
    try:
        out = run_cli("ab", "start", "inference", "model=landmarks-ik", timeout=180, check=True).stdout
        assert "variant B (inference.b) ready" in out

        def per_joint():
            agr = (request("ab_status")["comparison"] or {}).get("agreement") or {}
            return agr.get("rot_deg_per_joint") and agr
        agr = wait_for(per_joint, timeout=120, what="per-joint agreement of matched frames with persons")
        per = agr["rot_deg_per_joint"]
        assert len(per) == 24 and all(0.0 <= v <= 180.0 for v in per.values()), per
        table = run_cli("ab", "status", check=True).stdout
        assert "rotation difference per joint (deg): pelvis" in table and "landmarks-ik" in table

        gen = workers(request("status"))["inference"]["generation"]
        out = run_cli("ab", "stop", "--keep", "B", timeout=200, check=True).stdout
        assert f"generation {gen} -> {gen + 1}" in out
        status = request("status")
        inf = workers(status)["inference"]
        assert inf["info"]["model"] == "landmarks-ik" and inf["info"]["untrained"] is False
        frames = receive_frames(native_endpoint(status), 3, timeout=60,
                                until=lambda fr: any(f.model == "landmarks-ik" for f in fr[-1:]))
        f = frames[-1]
        assert f.model == "landmarks-ik" and not f.untrained and f.backend == "litert"
        for p in f.persons:
            assert np.all(np.isfinite(p.body_pose)) and p.transl[2] > 0 and p.joints is not None
    finally:
        assert run_cli("stop", timeout=60).returncode == 0
