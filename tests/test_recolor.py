import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.recolor import ComposeOptions, Recolor


def test_blends_labelled_pixels_and_leaves_background_untouched(vtest_frame: np.ndarray) -> None:
    label_set = load_label_set("cihp")
    labels = np.zeros(vtest_frame.shape[:2], np.uint8)
    labels[100:200, 300:350] = 13  # face
    labels[200:260, 300:350] = 5  # upper clothes
    out = Recolor(label_set, ComposeOptions(alpha=0.6, legend=False)).process(vtest_frame, labels)
    assert np.array_equal(out[labels == 0], vtest_frame[labels == 0])
    expected = 0.4 * vtest_frame[150, 320].astype(float) + 0.6 * label_set.colors[13]
    assert np.abs(out[150, 320].astype(float) - expected).max() <= 1
    expected = 0.4 * vtest_frame[230, 320].astype(float) + 0.6 * label_set.colors[5]
    assert np.abs(out[230, 320].astype(float) - expected).max() <= 1


def test_alpha_one_paints_pure_class_colors(vtest_frame: np.ndarray) -> None:
    label_set = load_label_set("bodypix")
    labels = np.zeros(vtest_frame.shape[:2], np.uint8)
    labels[:, :24] = np.arange(1, 25)[None, :]
    out = Recolor(label_set, ComposeOptions(alpha=1.0, legend=False)).process(vtest_frame, labels)
    assert np.array_equal(out[0, :24], label_set.colors[1:25])


def test_legend_names_the_classes_present(vtest_frame: np.ndarray) -> None:
    label_set = load_label_set("cihp")
    labels = np.zeros(vtest_frame.shape[:2], np.uint8)
    present = (2, 5, 13)
    for i, label in enumerate(present):
        labels[300 + 30 * i:330 + 30 * i, 400:500] = label
    plain = Recolor(label_set, ComposeOptions(alpha=0.5, legend=False)).process(vtest_frame, labels)
    with_legend = Recolor(label_set, ComposeOptions(alpha=0.5, legend=True)).process(vtest_frame, labels)
    changed = np.any(plain != with_legend, axis=2)
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() >= 6 and rows.max() < 6 + 18 * len(present), "one entry per class present, no more"
    for i, label in enumerate(present):
        y = 6 + 18 * i
        assert np.array_equal(with_legend[y + 1:y + 12, 7:20], np.broadcast_to(label_set.colors[label], (11, 13, 3)))
        assert changed[y:y + 13, 26:120].sum() > 20, f"entry {i} has its name written beside the swatch"
