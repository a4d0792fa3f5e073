"""The two Fashion-MNIST models of the NIR benchmark (``benchmarks/nir_accuracy.py``), trained or loaded
from ``benchmarks/.cache/``:

- ``resnet``: ``benchmarks/architectures.py``'s SmallResNet (the same cache file);
- ``vgg-avg``: ``benchmarks/accuracy.py``'s VGG with 2x2 *average* pooling in place of max pooling
  (max pooling over spikes has no NIR primitive), trained with the VGG's configuration (15 epochs on
  all 60k training images, AdamW one-cycle lr 3e-3, weight decay 1e-4, batch 128, seed 0).

Fill the cache::

    python benchmarks/nir_models.py
"""
from __future__ import annotations

import sys

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402

from signgd import models, training  # noqa: E402

VGG_AVG_WIDTHS = (16, "A", 32, 32, "A", 64, "A")
MODELS = ("resnet", "vgg-avg")


def trained_vgg_avg(train28, test28, seed: int = 0):
    config = {"dataset": "fashion-mnist", "train_samples": len(train28), "model": "signgd.models.vgg",
              "widths": list(VGG_AVG_WIDTHS), "hidden": 128, "epochs": 15, "batch_size": 128, "lr": 3e-3,
              "weight_decay": 1e-4, "optimizer": "AdamW+OneCycleLR", "seed": seed}

    def build():
        torch.manual_seed(seed)
        return models.vgg(widths=VGG_AVG_WIDTHS, hidden=128)

    def fit(model):
        common.log("training vgg-avg for 15 epochs (cache miss)")
        training.train(model, train28, epochs=15, batch_size=128, lr=3e-3, weight_decay=1e-4, seed=seed,
                       log=lambda m: common.log("  " + m))

    model, info = common.train_cached("fmnist-vgg-avg", config, build, fit,
                                      lambda m: training.accuracy(m, test28))
    common.log(f"vgg-avg: {'cached' if info['cached'] else 'trained'} ({info['path']}), "
               f"test accuracy {100 * info['test_accuracy']:.2f}%")
    return model, info


def prepared(name: str, args, train28, test28, idx_test, idx_cal):
    """``(model, info, test subset, calibration inputs)``, as ``architectures.prepared``."""
    if name == "resnet":
        return arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
    model, info = trained_vgg_avg(train28, test28, args.seed)
    subset = torch.utils.data.TensorDataset(*(t[idx_test] for t in test28.tensors))
    return model, info, subset, train28.tensors[0][idx_cal]


def main(argv=None) -> int:
    common.setup_torch(None)
    train28, test28 = arch.data.fashion_mnist("train"), arch.data.fashion_mnist("test")
    wanted = argv if argv else sys.argv[1:] or list(MODELS)
    if "resnet" in wanted:
        arch.trained("resnet", arch.parse_args([]), train28, test28)
    if "vgg-avg" in wanted:
        trained_vgg_avg(train28, test28)
    return 0


if __name__ == "__main__":
    sys.exit(main())
