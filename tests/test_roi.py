import numpy as np
import pytest

from vidparse.stages.roi import Crop, crop_height, crop_person, expand_box, pack, paste_labels, unpack


def test_expand_box_adds_margin_and_clips_to_frame() -> None:
    assert expand_box([10, 20, 30, 60], 0.5, (100, 100)) == (0, 0, 40, 80)
    assert expand_box([90, 90, 100, 100], 0.5, (100, 100)) == (85, 85, 100, 100)


def test_crop_is_scaled_to_person_height(vtest_frame: np.ndarray) -> None:
    crop = crop_person(vtest_frame, [591, 150, 618, 236], 0.1, 256)
    assert crop.image.shape[0] == 256
    x1, y1, x2, y2 = crop.region
    assert crop.scale == pytest.approx(256 / (y2 - y1))
    assert crop.image.shape[1] == round((x2 - x1) * crop.scale)


@pytest.mark.parametrize(("region", "max_upscale", "expected"), [
    (72, 0, 512),  # off: always person_height
    (72, 2, 144),  # a vtest-sized person: twice its height, not 512
    (72, 1.5, 108),
    (300, 2, 512),  # a photo-sized person: capped at person_height
    (800, 2, 512),  # larger than person_height: scaled down as before
])
def test_adaptive_scale_chooses_the_height_from_the_region(region: int, max_upscale: float, expected: int) -> None:
    assert crop_height(region, 512, max_upscale) == expected


def test_small_person_crop_is_upscaled_at_most_max_upscale(vtest_frame: np.ndarray) -> None:
    crop = crop_person(vtest_frame, [591, 150, 618, 236], 0.1, 512, max_upscale=2)
    x1, y1, x2, y2 = crop.region
    assert crop.image.shape[0] == 2 * (y2 - y1) and crop.scale == pytest.approx(2)
    assert crop.image.shape[1] == round((x2 - x1) * 2)


def test_pack_then_unpack_returns_every_image() -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (h, w, 3), np.uint8) for h, w in [(256, 90), (256, 130), (200, 60), (256, 256), (100, 40)]]
    canvas, placements = pack(images)
    assert canvas.shape[0] % 32 == 0 and canvas.shape[1] % 32 == 0
    assert canvas.shape[0] * canvas.shape[1] < 2.5 * sum(im.shape[0] * im.shape[1] for im in images)
    for image, back in zip(images, unpack(canvas, placements)):
        assert np.array_equal(image, back)
    boxes = [(p.x, p.y, p.x + p.width, p.y + p.height) for p in placements]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], "placements overlap"


def test_paste_keeps_first_writer_and_returns_what_it_wrote() -> None:
    frame = np.zeros((10, 10), np.uint8)
    first = Crop(region=(0, 0, 6, 6), image=np.zeros((6, 6, 3), np.uint8), scale=1.0)
    second = Crop(region=(4, 4, 10, 10), image=np.zeros((12, 12, 3), np.uint8), scale=2.0)
    paste_labels(frame, first, np.full((6, 6), 3, np.uint8))
    written = paste_labels(frame, second, np.full((12, 12), 7, np.uint8))
    assert frame[5, 5] == 3 and frame[9, 9] == 7 and frame[0, 9] == 0
    assert written[1, 1] == 0 and written[5, 5] == 7 and written.shape == (6, 6)
