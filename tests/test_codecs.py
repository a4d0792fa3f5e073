"""Input encodings and output decoding."""
import pytest
import torch

from signgd import schedules
from signgd.codecs import InputEncoder, OutputDecoder, hash_uniform


def _encode(kind, z, T, seed=0, chunk=None):
    enc = InputEncoder(kind, seed)
    etas = schedules.exponential().etas(1, T + 1, z.dtype)
    state = enc.init_state(z)
    chunk = chunk or T
    return torch.cat([enc.run(state, z, etas[t:t + chunk], t + 1) for t in range(0, T, chunk)])


def test_float_encoding_converges_to_about_0956_z():
    z = torch.linspace(-1, 1, 11, dtype=torch.float64).unsqueeze(0)
    e = _encode("float", z, 2000)
    ratio = e[-1, 0, z[0] != 0] / z[0, z[0] != 0]
    expected = 1 - torch.prod(1 - schedules.exponential().etas(1, 2001, torch.float64))
    assert torch.allclose(ratio, expected.expand_as(ratio))
    assert 0.955 < float(expected) < 0.957  # prod(1 - 0.15 * 0.95**k) does not vanish
    assert torch.allclose(e[0], 0.15 * z)  # e_1 = eta_1 * z


def test_spike_encoding_tracks_the_input_and_is_binary_steps():
    z = torch.rand(4, 3, dtype=torch.float64) * 2 - 1
    e = _encode("spike", z, 200)
    etas = schedules.exponential().etas(1, 201, torch.float64)
    steps = (e - torch.cat([torch.zeros_like(z)[None], e[:-1]])).abs()
    assert torch.allclose(steps, etas.view(-1, 1, 1).expand_as(steps))  # every step is +-eta_t
    assert (e[-1] - z).abs().max() <= etas[-1] + 1e-12


def test_stochastic_encoding_is_reproducible_batch_independent_and_unbiased():
    z = torch.rand(3, 50, dtype=torch.float64) - 0.5
    a, b = _encode("stochastic", z, 300, seed=7), _encode("stochastic", z, 300, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, _encode("stochastic", z, 300, seed=8))
    alone = _encode("stochastic", z[1:2], 300, seed=7)
    assert torch.equal(alone[:, 0], a[:, 1])  # a sample's noise does not depend on its batch-mates
    # A noisy estimate: sigmoid(e - z) is near 1/2 close to the target, so it settles only roughly
    # (measured: mean error 0.16 for |z| <= 0.5), but it does move towards z.
    assert (a[-1] - z).abs().mean() < 0.8 * z.abs().mean()


@pytest.mark.parametrize("kind", ["float", "spike", "stochastic", "analog"])
def test_encoders_give_the_same_sequence_in_any_chunking(kind):
    z = torch.rand(2, 6)
    assert torch.equal(_encode(kind, z, 40), _encode(kind, z, 40, chunk=7))


def test_analog_encoding_presents_the_input_every_step():
    z = torch.rand(2, 6)
    assert torch.equal(_encode("analog", z, 5), z.expand(5, 2, 6))


def test_hash_uniform_is_uniform_enough():
    u = hash_uniform(0, 1, (100_000,))
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert torch.histc(u.float(), 10, 0, 1).min() > 9_000


def test_subgradient_decoder_is_a_running_average():
    readout = torch.rand(10, 2, 3, dtype=torch.float64)
    etas = schedules.inverse(1.0).etas(1, 11, torch.float64)
    out = OutputDecoder("subgradient").run({"o": None}, readout, etas)
    # o_t = (sum of readouts) / (t + 1): the zero start counts as one sample
    t = torch.arange(1, 11, dtype=torch.float64).view(-1, 1, 1)
    assert torch.allclose(out, readout.cumsum(0) / (t + 1))
    assert torch.equal(OutputDecoder("signgd").run({"o": None}, readout, etas), readout)


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="unknown encoding 'rate'"):
        InputEncoder("rate")
