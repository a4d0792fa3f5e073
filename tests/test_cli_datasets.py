"""The CLI's image options (``--resize/--crop/--mean/--std``) through torchvision's transforms.v2."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from signgd import data
from signgd.cli.datasets import ImageOptions, load_split
from signgd.errors import UsageError


def test_resize_crop_and_normalize_equal_the_same_steps_written_by_hand():
    x0, y0 = data.digits("test")[0]  # [1, 8, 8] in [0, 1]
    x, y = load_split("digits", "test", ImageOptions(resize=16, crop=12, mean=(0.5,), std=(0.25,)))[0]
    by_hand = F.interpolate(x0.unsqueeze(0), size=(16, 16), mode="bilinear", align_corners=False)[0]
    by_hand = (by_hand[..., 2:14, 2:14] - 0.5) / 0.25
    assert x.shape == (1, 12, 12) and int(y) == int(y0)
    torch.testing.assert_close(x, by_hand, rtol=0, atol=1e-6)


def test_no_options_leave_the_dataset_as_it_is():
    assert isinstance(load_split("digits", "test"), torch.utils.data.TensorDataset)


@pytest.mark.parametrize("opts, message", [
    (ImageOptions(crop=12), "--crop 12 is larger than the 8x8 images; use --resize first"),
    (ImageOptions(mean=(0.1, 0.2)), "--mean/--std give 2/1 values for 1-channel images"),
])
def test_options_that_do_not_fit_the_images_are_refused_by_name(opts, message):
    with pytest.raises(UsageError, match=message):
        load_split("digits", "test", opts)[0]
