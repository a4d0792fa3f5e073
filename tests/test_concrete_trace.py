"""Models that branch on their sizes convert: sizes are known numbers, the batch stays free.

timm's TinyViT (``if H == self.window_size``), MobileViT, EfficientViT-M and VGG's ConvMlp
(``if x.shape[-2] < self.input_kernel_size``) defeat plain torch.fx tracing; ``graph/concrete.py``
traces them with their sizes known. A branch on the batch or on values is still refused.
"""
import pytest
import torch
import torch.nn.functional as F
from model_helpers import fast_count
from sklearn.datasets import load_digits
from torch import nn

import signgd
from signgd.errors import TraceError


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16  # 8x8
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


class ShapeBranches(nn.Module):
    """Pads to a multiple of the window only when needed, and pools windows it counts from H, W."""

    def __init__(self, window: int = 3, on: str = "size"):
        super().__init__()
        self.window, self.on = window, on
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6 * 9, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        B, C, H, W = x.shape
        if self.on == "batch" and B > 1:
            x = x * 2
        if self.on == "values" and x.sum() > 0:
            x = x * 2
        if H % self.window or W % self.window:  # a branch on a spatial size
            x = F.pad(x, (0, -W % self.window, 0, -H % self.window))
        nh, nw = x.shape[-2] // self.window, x.shape[-1] // self.window
        x = x.view(B, C, nh, self.window, nw, self.window).permute(0, 1, 2, 4, 3, 5)
        x = x.reshape(B, C, nh * nw, -1).mean(-1)
        return self.head(torch.relu(x).flatten(1))


def test_plain_fx_fails_on_a_branch_on_sizes():
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(ShapeBranches())


@pytest.mark.parametrize("batch", [1, 5])
def test_a_model_branching_on_sizes_converts_and_runs_on_any_batch(batch):
    torch.manual_seed(0)
    model = ShapeBranches().eval()
    snn = signgd.convert(model, _digits(16))
    assert snn.graph_module.meta["concrete_shapes"]
    assert any("sizes known" in note for note in snn.conversion_log)
    x = _digits(batch, seed=1)
    with torch.no_grad():
        ann = model(x)
    assert torch.allclose(snn.ann(x), ann, atol=1e-5)
    outs = snn(x, T=[32, 256])
    err = {t: float((outs[t] - ann).norm() / ann.norm()) for t in outs}
    assert err[256] < err[32] and err[256] < 0.1, err


def test_a_plain_traceable_model_is_traced_as_before():
    snn = signgd.convert(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU()).eval(), _digits(8))
    assert not snn.graph_module.meta["concrete_shapes"]


@pytest.mark.parametrize("on", ["batch", "values"])
def test_a_branch_on_the_batch_or_on_values_is_still_refused(on):
    with pytest.raises(TraceError, match="could not trace ShapeBranches"):
        signgd.convert(ShapeBranches(on=on).eval(), _digits(16))


def _check_tracks(snn, model, x) -> dict:
    """The converted graph equals the model on ``x``, and the SNN's error falls from T=16 to below 1% at T=128."""
    with torch.no_grad():
        ann = model(x)
    assert torch.allclose(snn.ann(x), ann, atol=1e-5)
    outs = snn(x, T=[16, 128])
    errors = [float((outs[t] - ann).norm() / ann.norm()) for t in (16, 128)]
    assert errors[1] < errors[0] and errors[1] < 0.01, errors
    return outs


class LazyBuffer(nn.Module):
    """timm ConViT's pattern: a buffer rebuilt in forward when its size does not match the input's (a branch on a
    size), then expanded to the batch, ``self.rel.expand(B, -1, -1)``: a plain tensor cannot take the batch's
    Proxy as a size, so the tracer reads buffers as Proxies."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("rel", torch.zeros(1, 1, 1), persistent=False)
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x)).flatten(2)  # B, 4, 64
        B, C, N = x.shape
        if self.rel.shape[-1] != N:
            self.rel = torch.linspace(-1, 1, C * N).reshape(1, C, N)
        return self.head(torch.relu(x + self.rel.expand(B, -1, -1)).flatten(1))


def test_a_buffer_expanded_to_the_batch_converts_and_runs_on_any_batch():
    torch.manual_seed(0)
    model = LazyBuffer().eval()
    snn = signgd.convert(model, _digits(16), schedule="adaptive")
    assert snn.graph_module.meta["concrete_shapes"]
    for batch in (1, 3):
        _check_tracks(snn, model, _digits(batch, seed=2))


class ItemAssignment(nn.Module):
    """timm MViTv2's pattern: attention scores with a bias added to a block by item assignment,
    ``attn[:, :, 1:, 1:] = attn[:, :, 1:, 1:] + bias`` (a Proxy takes no item assignment in plain fx)."""

    def __init__(self, stale_view: bool = False):
        super().__init__()
        self.stale_view = stale_view
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bias = nn.Parameter(torch.randn(3, 3))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x)).flatten(2)  # B, 4, 64
        attn = x @ x.transpose(1, 2) / 64  # B, 4, 4: a product of two activations
        seen = attn.flatten(1)  # a view: eager code sees the assignment through it
        attn[:, 1:, 1:] = attn[:, 1:, 1:] + self.bias
        out = attn.softmax(-1).flatten(1)
        return self.head(out + seen if self.stale_view else out)


def test_an_item_assignment_converts_as_a_new_value(tmp_path):
    from signgd.report.event_count import count_operations

    torch.manual_seed(0)
    model = ItemAssignment().eval()
    snn = signgd.convert(model, _digits(16), schedule="adaptive")
    assert any(n.op == "call_function" and n.target.__name__ == "assign" for n in snn.graph_module.graph.nodes)
    x = _digits(3, seed=3)
    outs = _check_tracks(snn, model, x)
    assert torch.equal(signgd.load(snn.save(tmp_path / "assign.snn"))(x, T=16), outs[16])  # saved and loaded
    # The energy count moves its changes as it moves the values: the fast count equals the literal one.
    double = signgd.convert(ItemAssignment().double().eval(), _digits(4).double(), schedule="adaptive")
    xd = _digits(2, seed=4).double()
    literal, fast = count_operations(double, xd, 6), fast_count(double, xd, 6)
    assert set(literal) == set(fast) and all(torch.equal(literal[n], fast[n]) for n in literal)


def test_a_view_read_after_an_item_assignment_is_refused_not_miscomputed():
    """Eager code sees the assignment through a view taken before it; the graph's value does not. The rewritten
    graph then computes something else than the model, and conversion says so in one line."""
    torch.manual_seed(0)
    with pytest.raises(TraceError, match=r"assigns into a tensor \(x\[\.\.\.\] = \.\.\.\) in "
                       r"ItemAssignment\.forward, .*view taken before the assignment.*Fix: take the view") as info:
        signgd.convert(ItemAssignment(stale_view=True).eval(), _digits(16), schedule="adaptive")
    assert "\n" not in str(info.value)


class BufferFlag(nn.Module):
    """A branch on a buffer's value (``if self.shift:``) beside a branch on a size: buffers read as Proxies cannot
    decide it, so the size-known tracer traces again with plain buffers, as before ConViT's case."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("shift", torch.tensor(True))
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        if x.shape[-1] % 2:  # a branch on a size
            x = F.pad(x, (0, 1))
        if self.shift:  # a branch on a buffer's value
            x = x + 0.5
        return self.head(torch.relu(x).flatten(1))


def test_a_branch_on_a_buffers_value_still_converts():
    torch.manual_seed(0)
    model = BufferFlag().eval()
    snn = signgd.convert(model, _digits(16), schedule="adaptive")
    assert snn.graph_module.meta["concrete_shapes"]
    _check_tracks(snn, model, _digits(3, seed=5))
