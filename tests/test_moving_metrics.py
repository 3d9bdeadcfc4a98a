"""Moving-pixel PSNR and changed-token accuracy on hand-made frames whose answers are known."""

from __future__ import annotations

import math

import torch

from wm_video.metrics.moving import MOVING_THRESHOLD, MovingScores, moving_mask, pooled_psnr


def test_moving_pixel_psnr_counts_only_pixels_that_moved() -> None:
    prev = torch.full((1, 3, 4, 4), -1.0)
    truth = prev.clone()
    truth[0, :, 0, 0] = 1.0  # the one pixel that moves
    pred = truth.clone()
    pred[0, :, 0, 0] = 0.0  # error 1 on each channel of the moving pixel
    pred[0, :, 1, 1] = 1.0  # a large error on a static pixel: must not count
    s = MovingScores()
    s.add_pixels(pred, truth, prev)
    assert s.px == 3  # one pixel, three channels
    assert math.isclose(s.psnr_db, 10 * math.log10(4.0 / 1.0), rel_tol=1e-6)


def test_moving_mask_threshold_and_any_channel() -> None:
    prev = torch.zeros(1, 3, 1, 2)
    cur = prev.clone()
    cur[0, 2, 0, 0] = MOVING_THRESHOLD * 1.5  # only the blue channel moves: the whole pixel counts
    cur[0, 0, 0, 1] = MOVING_THRESHOLD * 0.5  # below the threshold: static
    m = moving_mask(prev, cur)
    assert m[0, :, 0, 0].all() and not m[0, :, 0, 1].any()


def test_pooled_over_frames_not_averaged_per_frame() -> None:
    s = MovingScores()
    prev = torch.full((1, 3, 2, 2), -1.0)
    a = prev.clone()
    a[0, :, 0, 0] = 1.0
    s.add_pixels(a, a, prev)  # frame 1: one moving pixel, predicted exactly
    b = prev.clone()
    b[0, :, :, :] = 1.0
    pb = b.clone()
    pb[0, :, :, :] = 0.0
    s.add_pixels(pb, b, prev)  # frame 2: four moving pixels, error 1 each
    # pooled: squared error 12 over 15 values
    assert math.isclose(s.psnr_db, 10 * math.log10(4.0 / (12 / 15)), rel_tol=1e-6)


def test_changed_token_accuracy_and_nothing_moved() -> None:
    s = MovingScores()
    prev = torch.tensor([[[1, 2], [3, 4]]])
    true = torch.tensor([[[1, 5], [3, 6]]])
    pred = torch.tensor([[[9, 5], [3, 7]]])  # the unchanged (0,0) is wrong: ignored
    s.add_tokens(pred, true, prev)
    assert s.changed == 2 and s.token_accuracy == 0.5
    empty = MovingScores()
    empty.add_pixels(prev.float()[None].expand(1, 3, 2, 2), prev.float()[None].expand(1, 3, 2, 2),
                     prev.float()[None].expand(1, 3, 2, 2))
    assert math.isnan(empty.psnr_db) and math.isnan(empty.token_accuracy)
    assert math.isnan(pooled_psnr(0.0, 0))
