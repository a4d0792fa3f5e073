"""The torch reference of the signGD scan (signgd.kernels.reference), by hand."""
import torch

from signgd.kernels import signgd_scan


def test_torch_reference_by_hand():
    # y0 = 0 and target 0: a tie fires (y >= target), so the first step goes down.
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.5]])
    etas = torch.tensor([0.5, 0.25, 0.25, 0.5])
    spikes = torch.zeros(4, dtype=torch.float64)
    out, y = signgd_scan(target, torch.zeros(2), etas, 2.0, spikes, backend="torch")
    # element 0: 0>=0 fire -> -0.5; -0.5<0 -> -0.25; -0.25<0 -> 0.0; 0>=-1 fire -> -0.5
    # element 1: 0<1 -> 0.5; 0.5<1 -> 0.75; 0.75<1 -> 1.0; 1.0>=0.5 fire -> 0.5
    assert torch.equal(out, 2.0 * torch.tensor([[-0.5, 0.5], [-0.25, 0.75], [0.0, 1.0], [-0.5, 0.5]]))
    assert torch.equal(y, torch.tensor([-0.5, 0.5]))
    assert spikes.tolist() == [1.0, 0.0, 0.0, 2.0]
