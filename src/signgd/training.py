"""A plain supervised training loop, for the demo, tests and benchmarks (signgd converts models;
it does not need them trained any special way)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def train(model: nn.Module, dataset: Dataset, *, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
          weight_decay: float = 1e-4, seed: int = 0, augment=None, log=None) -> nn.Module:
    """Train with AdamW and a cosine schedule on cross-entropy; returns the model in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            if augment is not None:
                x = augment(x)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * x.shape[0]
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / (len(loader) * batch_size):.4f}")
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    model.eval()
    correct = n = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(x).argmax(-1) == y).sum())
        n += len(y)
    return correct / n
