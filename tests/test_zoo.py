"""A subset of the model zoo (``benchmarks/zoo.py``): each model converts, its rewritten graph equals
it as an ANN on a new batch of 4, and its SNN tracks it (the error falls from T=32 to T=256 and ends
below 0.25), with the benchmark's own builder and measurement.

The fast ones run by default (a few seconds each): the mobile nets the scale fallback broke
(mobilenet_v2, mnasnet). The rest are ``slow``: the windowed attention that failed on a new batch
size (davit), and the models traced with their sizes known (TinyViT, EfficientViT, MobileViT, VGG).
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import zoo  # noqa: E402

FAST = ["torchvision:mobilenet_v2", "torchvision:mnasnet0_5", "torchvision:squeezenet1_1",
        "torchvision:shufflenet_v2_x0_5"]
SLOW = ["torchvision:efficientnet_b0", "torchvision:resnet18", "timm:davit_tiny", "timm:tiny_vit_5m_224",
        "timm:efficientvit_b0", "timm:efficientvit_m0", "timm:mobilevit_xxs", "timm:vgg11"]


def _check(key: str, native_side: bool = False) -> None:
    threads = torch.get_num_threads()
    try:
        row = zoo.measure(key, "random", native_side=native_side)
    finally:
        torch.set_num_threads(threads)
    assert row["status"] == "ok", row.get("error")
    assert row["ann_error"] < 1e-4, row
    assert row["err256"] < row["err32"] and row["err256"] < zoo.TRACKING_BOUND, row
    assert row["tracks"]


@pytest.mark.parametrize("key", FAST)
def test_zoo_model_converts_and_tracks(key):
    _check(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", SLOW)
def test_zoo_model_converts_and_tracks_slow(key):
    _check(key, native_side=True)  # at the side they were traced for (224, 256), not the zoo's 64 px first


def test_a_worker_past_its_cpu_time_limit_is_a_timeout_row_with_its_seconds():
    """The limit is CPU seconds of the worker (RLIMIT_CPU), not wall seconds: a worker given 1 CPU second
    (less than importing torch takes) is ended by SIGXCPU, and its row says so, with the seconds it used."""
    row = zoo.run_one("torchvision:squeezenet1_1", "random", 1)
    assert row["status"] == "timeout" and row["error"] == "no result within 1 CPU s", row
    assert 0.5 <= row["cpu_seconds"] <= 10 and row["wall_seconds"] > 0, row


def test_a_timm_model_runs_at_the_small_side_where_it_builds_there_else_at_its_native_side():
    """LeViT (native 224) builds for 64 px with ``img_size=64``; EfficientFormer-L1's attention bias is tied to
    the 7x7 grid of 224 px, so at 64 px it fails to run and the zoo falls back to 224, recording why."""
    import zoo_models

    assert zoo_models.sides("timm:levit_128s") == (64, 224)
    assert zoo_models.sides("timm:resnet18") == (64,) and zoo_models.sides("torchvision:resnet18") == (32,)
    model, side, failed = zoo_models.build_sized("timm:levit_128s")
    assert side == 64 and failed == {}
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    model, side, failed = zoo_models.build_sized("timm:efficientformer_l1")
    assert side == 224 and list(failed) == [64] and "RuntimeError" in failed[64]
