import math

import pytest
import torch

from signgd import schedules


def test_exponential_is_the_paper_default():
    s = schedules.make_schedule(None)
    eta = s.etas(1, 5, dtype=torch.float64)
    assert torch.allclose(eta, torch.tensor([0.15 * 0.95**k for k in range(4)], dtype=torch.float64))
    assert math.isclose(s.total(10_000), 3.0, rel_tol=1e-9)  # sum of eta_t -> 0.15 / 0.05


def test_named_schedules_follow_their_formulas():
    t = torch.arange(1, 11, dtype=torch.float64)
    assert torch.allclose(schedules.inverse(1.0).etas(1, 11, torch.float64), 1 / (t + 1))
    assert torch.allclose(schedules.constant(0.1).etas(1, 11, torch.float64),
                          torch.full((10,), 0.1, dtype=torch.float64))
    assert torch.allclose(schedules.polynomial(0.5, 0.5).etas(1, 11, torch.float64), 0.5 * t**-0.5)


def test_chunks_of_a_schedule_concatenate_to_the_whole():
    s = schedules.exponential(0.3, 0.9)
    whole = s.etas(1, 101, torch.float64)
    parts = torch.cat([s.etas(a, min(a + 7, 101), torch.float64) for a in range(1, 101, 7)])
    assert torch.allclose(whole, parts, rtol=1e-14, atol=0)


def test_no_cap_on_the_number_of_steps():
    eta = schedules.exponential().etas(1, 20_001)
    assert eta.shape == (20_000,) and torch.isfinite(eta).all() and (eta >= 0).all()


def test_string_dict_callable_and_tensor_specs():
    assert schedules.make_schedule("exponential:lr=0.3,decay=0.9").params == {"lr": 0.3, "decay": 0.9}
    assert schedules.make_schedule({"name": "inverse", "lr": 2.0}).etas(1, 2, torch.float64).item() == 1.0
    vec = schedules.make_schedule(lambda t: 0.1 / t)  # vectorized callable
    scal = schedules.make_schedule(lambda t: 0.1 / float(t))  # scalar-only callable
    assert torch.allclose(vec.etas(1, 4, torch.float64), scal.etas(1, 4, torch.float64))
    tens = schedules.make_schedule(torch.tensor([0.5, 0.25]))
    assert torch.equal(tens.etas(1, 3, torch.float64), torch.tensor([0.5, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="2 steps but step 3"):
        tens.etas(1, 4)
    # spec() round-trips through make_schedule (what saved networks and reports rely on)
    for s in [schedules.exponential(0.2, 0.8), schedules.polynomial(), tens]:
        again = schedules.make_schedule(s.spec())
        assert torch.equal(again.etas(1, 3, torch.float64), s.etas(1, 3, torch.float64))


@pytest.mark.parametrize("bad", ["cosine", {"name": "nope"}, 3.5])
def test_bad_schedules_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        schedules.make_schedule(bad)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="positive"):
        schedules.exponential(lr=-1)
    with pytest.raises(ValueError, match="decay"):
        schedules.exponential(decay=1.5)
