"""The profiler's cost governor: details are read less often while the profiler's own CPU is
over budget, and every sample again once it is well under."""
from pipeline.profiling.governor import CostGovernor


def run(gov, samples, cost_per_detail, cost_base, t0=0.0, cpu0=0.0, dt=0.5):
    t, cpu, pattern = t0, cpu0, []
    for _ in range(samples):
        detail = gov.detail_now()
        pattern.append(detail)
        t += dt
        cpu += cost_base + (cost_per_detail if detail else 0.0)
        gov.after_sample(t, cpu)
    return t, cpu, pattern


def test_over_budget_backs_off_then_recovers():
    gov = CostGovernor(budget_percent=1.5, window=4)
    # 20 ms of detail per 0.5 s sample = 4 % of a core: too much
    t, cpu, _ = run(gov, 40, cost_per_detail=0.020, cost_base=0.001)
    assert gov.every >= 4 and gov.highest == gov.every
    _, _, pattern = run(gov, 16, cost_per_detail=0.020, cost_base=0.001, t0=t, cpu0=cpu)
    assert 0 < sum(pattern) <= 16 // 4 + 1
    # details become cheap: back to every sample
    run(gov, 80, cost_per_detail=0.0002, cost_base=0.0002, t0=t + 8, cpu0=cpu + 1)
    assert gov.every == 1 and gov.highest >= 4
    assert "every" in gov.describe() and str(gov.highest) in gov.describe()


def test_cheap_profiles_read_everything():
    gov = CostGovernor()
    _, _, pattern = run(gov, 30, cost_per_detail=0.001, cost_base=0.0005)
    assert all(pattern) and gov.highest == 1
    assert "every sample" in gov.describe()


def test_never_backs_off_past_the_limit():
    gov = CostGovernor(window=3, max_every=8)
    run(gov, 200, cost_per_detail=0.5, cost_base=0.5)
    assert gov.every == 8
