"""A real model on real data: a CNN with BN and max pooling trained on digits, then converted."""
import signgd


def test_digits_cnn_snn_matches_the_ann_at_T64(trained_digits_cnn, digits_train, digits_test):
    calibration = digits_train.tensors[0][:400]
    snn = signgd.convert(trained_digits_cnn, calibration, schedule="exponential")  # the paper's preset
    report = signgd.evaluate(snn, digits_test, T=[8, 16, 32, 64])
    assert report.ann_accuracy > 0.97
    assert report.snn_accuracy[64] >= report.ann_accuracy - 0.01
    assert report.snn_accuracy[8] < report.snn_accuracy[64]  # the float encoding needs time
    assert "| 64 |" in report.table()


def test_digits_cnn_subgradient_dynamics_reaches_the_ann(trained_digits_cnn, digits_train, digits_test):
    calibration = digits_train.tensors[0][:400]
    snn = signgd.convert(trained_digits_cnn, calibration, dynamics="subgradient")
    report = signgd.evaluate(snn, digits_test, T=[4, 256])
    assert report.snn_accuracy[256] >= report.ann_accuracy - 0.015
    assert report.snn_accuracy[4] < report.snn_accuracy[256]
