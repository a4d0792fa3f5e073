"""Shared fixtures: a small CNN trained on scikit-learn's digits (real data, a few seconds)."""
from __future__ import annotations

import os

import pytest
import torch

from signgd import data, models, training

torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def digits_train():
    return data.digits("train")


@pytest.fixture(scope="session")
def digits_test():
    return data.digits("test")


@pytest.fixture(scope="session")
def trained_digits_cnn(digits_train):
    """The demo's CNN (conv, BN, ReLU, max pooling, linear), trained on digits: ~99% test accuracy."""
    torch.manual_seed(0)
    model = models.digits_cnn()
    training.train(model, digits_train, epochs=30, seed=0)
    return model


@pytest.fixture(scope="session")
def weights(trained_digits_cnn, tmp_path_factory):
    """The trained digits CNN's state_dict in a file, for commands (``--weights``) and subprocesses."""
    path = tmp_path_factory.mktemp("weights") / "digits_cnn.pt"
    torch.save(trained_digits_cnn.state_dict(), path)
    return path
