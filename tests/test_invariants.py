"""What a user may rely on when running a converted network: calls are independent of each other,
of batch-mates and of other threads; T has no limit and the time-major path's memory does not grow
with it; each dtype works with a known accuracy; inputs on another device are refused clearly."""
import copy
import ctypes
import gc
import re
import threading

import pytest
import torch
from torch import nn

import signgd


def _net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, padding=1), nn.GELU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 10))
    model[1].running_mean.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(12, 1, 8, 8)


ENCODINGS = ["float", "spike", "stochastic", "analog"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_calls_are_bit_identical_whatever_came_before(x, encoding):
    """Repeated calls, calls after other inputs, other T or statistics: bit for bit the same (the
    stochastic encoding included: its noise is a hash of seed, step and element)."""
    snn = signgd.convert(_net(), x, encoding=encoding, seed=7, schedule="exponential")
    first = snn(x, T=[3, 20])
    snn(torch.rand(5, 1, 8, 8), T=50)
    snn.simulate(x[:2], 9, stats=True)
    again = snn(x, T=[3, 20])
    fresh = signgd.convert(_net(), x, encoding=encoding, seed=7,
                           schedule="exponential")(x, T=[3, 20])  # no earlier call at all
    for t in (3, 20):
        assert torch.equal(first[t], again[t]) and torch.equal(first[t], fresh[t])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_sample_does_not_depend_on_its_batch_mates_or_the_batch_size(x, encoding):
    snn = signgd.convert(_net().double(), x.double(), encoding=encoding, seed=7, schedule="exponential")
    xd = x.double()
    whole = snn(xd, T=24)
    others = torch.rand(30, 1, 8, 8, dtype=torch.float64)
    cases = [(xd[:1], whole[:1]), (xd[3:8], whole[3:8]),  # alone, a smaller batch
             (torch.cat([xd[5:6], others]), whole[5:6]),  # a larger batch, other batch-mates
             (xd.flip(0), whole.flip(0))]  # another order
    for batch, expected in cases:
        got = snn(batch, T=24)[: len(expected)]
        assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_threads_sharing_one_network_get_what_sequential_calls_get(x):
    """All state of a run belongs to the call: two threads running the same network at once get the
    results of running one after the other (statistics included)."""
    snn = signgd.convert(_net(), x, encoding="stochastic", schedule="exponential")
    jobs = [(x, 64), (x[3:9], 33), (torch.rand(7, 1, 8, 8), 40), (x[:1], 80)]
    expected = [snn.simulate(xi, T, stats=True) for xi, T in jobs]
    results: dict[int, list] = {i: [] for i in range(len(jobs))}
    errors = []
    start = threading.Barrier(len(jobs))

    def work(i):
        try:
            start.wait()
            for _ in range(4):
                results[i].append(snn.simulate(jobs[i][0], jobs[i][1], stats=True))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (_, T) in enumerate(jobs):
        for got in results[i]:
            assert torch.equal(got.outputs[T], expected[i].outputs[T])
            assert got.spikes_per_sample() == expected[i].spikes_per_sample()


# ---- no limit on T ---------------------------------------------------------------------------------
def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)", f.read(), re.M).group(1))


def _peak_growth_kib(fn) -> int:
    """Resident memory ``fn()`` needs above what the process holds (Linux: VmHWM reset)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    base = _kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    fn()
    return _kib("VmHWM") - base


def _can_measure() -> bool:
    try:
        _peak_growth_kib(lambda: None)
        return True
    except (OSError, AttributeError, ValueError):
        return False


def _wide_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2000)).eval()


def _memory_does_not_grow_with_T(short: int, long: int):
    x = torch.rand(8, 16)
    snn = signgd.convert(_wide_mlp(), x, schedule="exponential")
    # Each step's output is 8 x 2000 floats (62.5 KiB): a run that kept one per step would need
    # (long - short) x 62.5 KiB more at T=long. The time-major path keeps none of them.
    grow = {T: _peak_growth_kib(lambda: snn(x, T=T, chunk=1)) for T in (short, long)}
    kept_per_step = 8 * 2000 * 4 / 1024
    assert grow[long] - grow[short] < max(4096, 0.02 * (long - short) * kept_per_step), grow
    out = snn(x, T=[1, long], chunk=1)
    assert torch.isfinite(out[long]).all()
    assert torch.allclose(out[long], snn(x, T=long), rtol=0, atol=1e-5)  # equals the default plan's run


@pytest.mark.skipif(not _can_measure(), reason="needs Linux /proc/self/clear_refs to measure peak memory")
def test_time_major_memory_does_not_grow_with_T():
    _memory_does_not_grow_with_T(200, 2000)


@pytest.mark.slow
@pytest.mark.skipif(not _can_measure(), reason="needs Linux /proc/self/clear_refs to measure peak memory")
def test_time_major_T_10000_runs_in_the_memory_of_T_1000():
    _memory_does_not_grow_with_T(1000, 10_000)


def test_T_10000_runs_on_the_default_path(x):
    snn = signgd.convert(_net(), x, schedule="inverse:lr=1")
    outs = snn(x[:2], T=[1000, 10_000])
    with torch.no_grad():
        ann = _net()(x[:2])
    assert torch.isfinite(outs[10_000]).all()
    assert (outs[10_000] - ann).abs().max() < (outs[1000] - ann).abs().max()


# ---- dtypes and devices ------------------------------------------------------------------------------
# Max deviation from the float64 ANN relative to its output scale at T=256 (analog input), measured
# on this network; docs/reliability.md quotes them. bfloat16 stalls once eta_t falls below half a
# bfloat16 step of the estimates (8 mantissa bits: about T=70 with the default schedule).
DTYPE_BOUNDS = {torch.float64: 1e-3, torch.float32: 1e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", list(DTYPE_BOUNDS), ids=str)
def test_each_cpu_dtype_converts_and_reaches_its_documented_accuracy(x, dtype):
    model = copy.deepcopy(_net())
    snn = signgd.convert(model.to(dtype), x.to(dtype), encoding="analog", schedule="exponential")
    with torch.no_grad():
        ann = _net().double()(x.double())
    outs = snn(x.to(dtype), T=[16, 256])
    assert all(o.dtype == dtype for o in outs.values())
    err = {t: float((o.double() - ann).abs().max() / ann.abs().max()) for t, o in outs.items()}
    assert err[256] < DTYPE_BOUNDS[dtype], err
    assert err[256] <= err[16]


def test_input_on_another_device_or_dtype_is_refused_with_the_fix(x):
    snn = signgd.convert(_net(), x, schedule="exponential")
    with pytest.raises(signgd.InputError, match=r"the input is on meta but the network is on cpu; move one"):
        snn(x.to("meta"), T=4)
    with pytest.raises(signgd.InputError, match=r"dtype torch.bfloat16 but the network has torch.float32"):
        snn(x.bfloat16(), T=4)
    with pytest.raises(signgd.InputError, match=r"on meta"):
        snn.ann(x.to("meta"))


def test_calibration_in_another_float_dtype_is_cast_and_never_written(x):
    calibration = x.double()
    before = calibration.clone()
    snn = signgd.convert(_net(), calibration, schedule="exponential")  # a float32 model
    assert torch.equal(calibration, before) and snn.placement[1] == torch.float32
    assert torch.equal(snn(x, T=8), signgd.convert(_net(), x, schedule="exponential")(x, T=8))
