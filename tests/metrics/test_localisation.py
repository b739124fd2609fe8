"""Localisation metrics on synthetic maps and boxes whose answers are known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignbench.errors import MetricError
from alignbench.metrics.localisation import (
    METRIC_FUNCTIONS,
    box_mask,
    energy_in_box,
    has_box,
    pointing_game,
    stochastic_pointing_game,
)
from alignbench.testing.tolerance import float32_relative

H = W = 32
NAN = float("nan")


def boxes_of(*per_image: list[tuple[float, float, float, float]], pad_to: int | None = None):
    """boxes [B, K, 4] and box_counts [B] from per-image box lists; padding rows are far-off garbage."""
    k = max([len(b) for b in per_image] + [pad_to or 0])
    boxes = torch.full((len(per_image), k, 4), 1e6)
    for i, image_boxes in enumerate(per_image):
        for j, box in enumerate(image_boxes):
            boxes[i, j] = torch.tensor(box)
    return boxes, torch.tensor([len(b) for b in per_image], dtype=torch.int64)


def point_map(row: int, col: int, value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[row, col] = value
    return m


# known answers in [0, 1]: ratios of two float32 sums of ≤ H·W map values (energy in the box) or float64
# fractions of hits: float32_relative(2·H·W + 4) ≈ 2.4e-4 (was 1e-6, tuned), below the 1/(H·W) ≈ 9.8e-4 one
# pixel moved across a box edge changes a uniform map's energy by
ATOL = float32_relative(2 * H * W + 4)


def same(a: torch.Tensor, b: list[float]) -> bool:
    return torch.allclose(a.double(), torch.tensor(b, dtype=torch.float64), equal_nan=True, atol=ATOL)


BOX = (8.0, 4.0, 20.0, 16.0)  # columns 8..19, rows 4..15


# ------------------------------------------------------------------ box convention


def test_box_mask_is_half_open_on_pixel_centres():
    boxes, counts = boxes_of([BOX], [(2.4, 0, 4.6, 1)], [(2.6, 0, 4.4, 1)])
    mask = box_mask(boxes, counts, H, W)
    assert mask[0].sum() == 12 * 12
    assert mask[0, 4:16, 8:20].all()
    # centres 2.5, 3.5, 4.5: x0 = 2.4 takes column 2, x1 = 4.6 takes column 4
    assert mask[1, 0].nonzero().squeeze(1).tolist() == [2, 3, 4]
    # x0 = 2.6 drops column 2, x1 = 4.4 drops column 4
    assert mask[2, 0].nonzero().squeeze(1).tolist() == [3]


def test_boxes_are_clipped_dropped_and_padding_ignored():
    boxes, counts = boxes_of(
        [(-10, -10, 4, 4)],  # partly outside: clipped to the 4 x 4 corner
        [(40, 40, 50, 50)],  # entirely outside: dropped
        [(5, 5, 5, 9)],  # zero width: dropped
        [(9, 9, 3, 3)],  # inverted: dropped
        [(NAN, 0, 4, 4)],  # non-finite: dropped
        [],  # no box
        pad_to=2,
    )
    boxes[0, 1] = torch.tensor([0.0, 0, W, H])  # padding past the count covers everything: ignored
    mask = box_mask(boxes, counts, H, W)
    assert mask[0].sum() == 16 and mask[0, :4, :4].all()
    assert mask[1:].sum() == 0
    assert has_box(boxes, counts, H, W).tolist() == [True, False, False, False, False, False]


# ------------------------------------------------------------------ pointing game


def test_pointing_game_inside_outside_and_tolerance():
    maps = torch.stack(
        [
            point_map(10, 12),  # inside
            point_map(30, 30),  # far outside
            point_map(10, 25),  # 6 px right of the last column (19): within 15 px
            point_map(10, 20),  # first column past x1 = 20 (exclusive): outside by 1 px
        ]
    )
    boxes, counts = boxes_of([BOX], [BOX], [BOX], [BOX])
    assert same(pointing_game(maps, boxes, counts, tolerance=0), [1, 0, 0, 0])
    assert same(pointing_game(maps, boxes, counts), [1, 0, 1, 1])  # default tolerance 15
    assert same(pointing_game(maps, boxes, counts, tolerance=1), [1, 0, 0, 0])  # strict: d < tolerance


def test_pointing_game_tolerance_is_euclidean_and_strict():
    # the box's corner pixel is (row 15, column 19); (row 24, column 31) is at sqrt(9^2 + 12^2) = 15
    maps = torch.stack([point_map(24, 31), point_map(24, 30)])  # 15 and sqrt(81 + 121) ~ 14.2
    boxes, counts = boxes_of([BOX], [BOX])
    assert same(pointing_game(maps, boxes, counts, tolerance=15), [0, 1])
    assert same(pointing_game(maps, boxes, counts, tolerance=15.01), [1, 1])


def test_pointing_game_ties_multiple_boxes_and_undefined():
    two_max = point_map(30, 30) + point_map(10, 12)  # two maximal pixels, one inside
    maps = torch.stack([two_max, point_map(2, 2), torch.full((H, W), 0.3), point_map(10, 12), point_map(10, 12)])
    maps[4, 0, 0] = float("inf")
    boxes, counts = boxes_of([BOX], [BOX, (0, 0, 4, 4)], [BOX], [], [BOX])
    assert same(pointing_game(maps, boxes, counts, tolerance=0), [1, 1, NAN, NAN, NAN])


def test_pointing_game_is_batch_independent_and_on_straddling_map():
    torch.manual_seed(0)
    maps = torch.rand(6, H, W)
    boxes, counts = boxes_of(*[[(float(i), float(i), float(i + 12), float(i + 9))] for i in range(6)])
    together = pointing_game(maps, boxes, counts, tolerance=3)
    alone = torch.cat([pointing_game(maps[i : i + 1], boxes[i : i + 1], counts[i : i + 1], tolerance=3) for i in range(6)])
    assert torch.equal(together, alone)
    # reference: the argmax pixel against the clipped box grown by the tolerance (brute force)
    for i in range(6):
        r, c = divmod(int(maps[i].argmax()), W)
        x0, y0, x1, y1 = boxes[i, 0].tolist()
        d = min(math.dist((r, c), (y, x)) for y in range(int(y0), int(y1)) for x in range(int(x0), int(x1)))
        assert together[i] == float(d < 3)


# ------------------------------------------------------------------ energy in box


def test_energy_in_box_point_straddling_and_min_shift():
    straddle = torch.zeros(H, W)
    straddle[6:10, 14:24] = 2.0  # 4 x 10 block, columns 14..19 inside (6 of 10)
    floor = torch.full((H, W), 0.3)
    floor[10, 12] = 1.0  # a floor (as Threshold-Grad-CAM's clamp) carries no energy
    maps = torch.stack([point_map(10, 12), point_map(30, 30), straddle, floor])
    boxes, counts = boxes_of([BOX], [BOX], [BOX], [BOX])
    assert same(energy_in_box(maps, boxes, counts), [1.0, 0.0, 0.6, 1.0])


def test_energy_in_box_counts_overlapping_boxes_once_and_nans():
    uniform_block = torch.zeros(H, W)
    uniform_block[0:10, 0:10] = 1.0
    maps = torch.stack([uniform_block, uniform_block, torch.zeros(H, W), uniform_block])
    boxes, counts = boxes_of([(0, 0, 5, 10), (0, 0, 5, 10), (5, 0, 10, 5)], [(40, 40, 50, 50)], [BOX], [])
    assert same(energy_in_box(maps, boxes, counts), [0.75, NAN, NAN, NAN])


# ------------------------------------------------------------------ stochastic pointing game


def test_stochastic_pointing_game_point_maps_are_exact():
    maps = torch.stack([point_map(10, 12), point_map(30, 30)])
    boxes, counts = boxes_of([BOX], [BOX])
    assert same(stochastic_pointing_game(maps, boxes, counts, seeds=[1, 2]), [1.0, 0.0])
    # zero-mass pixels are never drawn, however the uniform numbers fall
    many = stochastic_pointing_game(maps, boxes, counts, n_points=5000, generator=torch.Generator().manual_seed(3))
    assert same(many, [1, 0])


def test_stochastic_pointing_game_straddling_map_is_close_to_its_energy():
    straddle = torch.zeros(H, W)
    straddle[6:10, 14:24] = 1.0  # 60% of the mass inside
    maps = straddle.expand(3, H, W)
    boxes, counts = boxes_of([BOX], [BOX], [BOX])
    values = stochastic_pointing_game(maps, boxes, counts, n_points=20000, seeds=[0, 1, 2])
    assert torch.allclose(values, torch.full((3,), 0.6), atol=0.015)  # 4.5 binomial standard errors
    assert len(set(values.tolist())) > 1  # different seeds, different draws


def test_stochastic_pointing_game_is_deterministic_per_image():
    torch.manual_seed(0)
    maps = torch.rand(4, H, W)
    boxes, counts = boxes_of([BOX], [BOX], [BOX], [BOX])
    seeds = [10, 11, 12, 13]
    batch = stochastic_pointing_game(maps, boxes, counts, seeds=seeds)
    one_by_one = torch.cat(
        [stochastic_pointing_game(maps[i : i + 1], boxes[i : i + 1], counts[i : i + 1], seeds=[s]) for i, s in enumerate(seeds)]
    )
    assert torch.equal(batch, one_by_one)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        stochastic_pointing_game(maps, boxes, counts, generator=g1), stochastic_pointing_game(maps, boxes, counts, generator=g2)
    )
    assert ((batch * 100) == (batch * 100).round()).all()  # fractions of 100 points


def test_stochastic_pointing_game_undefined():
    maps = torch.stack([torch.ones(H, W), point_map(10, 12), point_map(10, 12)])
    maps[2, 3, 3] = float("nan")
    boxes, counts = boxes_of([BOX], [], [BOX])
    assert same(stochastic_pointing_game(maps, boxes, counts, seeds=[0, 1, 2]), [NAN, NAN, NAN])


# ------------------------------------------------------------------ bad input and adapters


@pytest.mark.parametrize("fn", [pointing_game, stochastic_pointing_game, energy_in_box])
def test_bad_input_raises_one_clear_metric_error(fn):
    maps = torch.rand(2, H, W)
    boxes, counts = boxes_of([BOX], [BOX])
    cases = [
        (torch.rand(H, W), boxes, counts),  # no batch dimension
        (maps, boxes[:, :, :3], counts),  # not 4 coordinates
        (maps, boxes[:1], counts),  # batch mismatch
        (maps, boxes, torch.tensor([1, 2])),  # count past K
        (maps, boxes, torch.tensor([1.0, 1.0])),  # float counts
    ]
    for args in cases:
        with pytest.raises(MetricError) as err:
            fn(*args)
        assert "\n" not in str(err.value)


def test_adapters_need_boxes_and_are_batch_stable():
    maps = torch.stack([point_map(10, 12), point_map(30, 30)])
    boxes, counts = boxes_of([BOX], [BOX])
    for name, compute in METRIC_FUNCTIONS.items():
        with pytest.raises(MetricError, match="needs bounding boxes"):
            compute(maps, {"image": torch.zeros(2, 3, H, W)}, model=None, explanation=None)
        batch = {"boxes": boxes, "box_counts": counts, "index": torch.tensor([7, 8])}
        assert same(compute(maps, batch, model=None, explanation=None), [1.0, 0.0]), name


# ------------------------------------------------------------------ real ImageNet validation boxes


def test_real_imagenet_boxes_scaled_to_the_model_input(shared_data):
    """The 10 real images' boxes (inclusive pixel corners, as ImageNet/wsolevaluation store them),
    scaled to 224 x 224: a map peaked at a box's centre hits, a box-shaped map has all its energy in."""
    import csv

    rows = list(csv.DictReader((shared_data / "imagenet-val-10" / "labels_bboxes.csv").open()))
    per_image = []
    for row in rows:
        sx, sy = 224 / int(row["width"]), 224 / int(row["height"])
        boxes = [list(map(float, b.split())) for b in row["boxes_x0y0x1y1"].split(";")]
        # inclusive [x0, x1] -> half-open [x0, x1 + 1), then scaled
        per_image.append([(x0 * sx, y0 * sy, (x1 + 1) * sx, (y1 + 1) * sy) for x0, y0, x1, y1 in boxes])
    boxes, counts = boxes_of(*per_image)
    assert has_box(boxes, counts, 224, 224).all()
    inside = box_mask(boxes, counts, 224, 224)
    peaks = torch.zeros(len(rows), 224, 224)
    for i, image_boxes in enumerate(per_image):
        x0, y0, x1, y1 = image_boxes[0]
        peaks[i, int((y0 + y1) / 2), int((x0 + x1) / 2)] = 1.0
    assert pointing_game(peaks, boxes, counts, tolerance=0).tolist() == [1.0] * len(rows)
    assert same(energy_in_box(inside.float() + 0.5, boxes, counts), [1.0] * len(rows))


@pytest.mark.parametrize("fn", [pointing_game, stochastic_pointing_game, energy_in_box])
def test_empty_batch_gives_empty_result(fn):
    assert fn(torch.rand(0, H, W), torch.zeros(0, 1, 4), torch.zeros(0, dtype=torch.int64)).shape == (0,)
