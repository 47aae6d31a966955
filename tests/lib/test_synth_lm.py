"""The synthesize generator's time estimate before generating (tasks/lib/synth_lm.py)."""

from tasks.lib.synth_lm import upper_estimate


def test_the_estimate_scales_the_probe_to_the_token_budget_and_the_batches():
    assert upper_estimate(2.0, 8, 64, 5) == 2.0 * 8 * 5
    assert upper_estimate(2.0, 8, 4, 3) == 2.0 * 3  # a budget under the probe: never below it
    assert upper_estimate(1.5, 0, 16, 2) == 1.5 * 16 * 2  # no divide by zero
