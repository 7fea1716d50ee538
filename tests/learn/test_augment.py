"""Training/stress augmentations: deterministic per seed, and each changes what it claims to."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineguard.learn.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    augment_image,
    augment_labelled,
    brightness_contrast,
    gamma_correct,
    jpeg_artefacts,
    motion_blur,
    motion_kernel,
    perspective_warp,
    plan_augment,
    sensor_noise,
    warp_boxes,
)
from lineguard.sim.conveyor import Conveyor
from lineguard.sim.scenario import load_scenario


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A nominal line frame with a part in view, read-only like a camera's."""
    conveyor = Conveyor(load_scenario("nominal", {"parts.count": 1}, seed=4))
    i = max(range(0, conveyor.n_frames, 10), key=lambda k: len(conveyor.frame_truth(k)))
    image = conveyor.render(i)
    image.flags.writeable = False
    return image


def every(p: float = 1.0, **sections) -> AugmentConfig:
    """A config where every augmentation fires with probability p (sections override)."""
    return AugmentConfig.from_params({name: {"p": p, **sections.get(name, {})} for name in AUGMENTATIONS})


def only(name: str, **values) -> AugmentConfig:
    return AugmentConfig.from_params({n: {"p": 1.0 if n == name else 0.0, **(values if n == name else {})} for n in AUGMENTATIONS})


def second_derivative_var(image: np.ndarray, axis: str) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    dx, dy = (2, 0) if axis == "x" else (0, 2)
    return float(cv2.Sobel(grey, cv2.CV_64F, dx, dy, ksize=3)[8:-8, 8:-8].var())


def grey_mean(image: np.ndarray) -> float:
    return float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean())


# -- determinism ------------------------------------------------------------------------------


def test_the_same_seed_and_frame_give_identical_pixels_and_others_differ(frame):
    config = every(0.7)
    first = augment_image(frame, config, seed=11, index=5)
    again = augment_image(frame, config, seed=11, index=5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, augment_image(frame, config, seed=12, index=5))
    assert not np.array_equal(first, augment_image(frame, config, seed=11, index=6))


def test_switching_one_augmentation_off_leaves_the_others_draws_unchanged():
    with_noise = plan_augment(every(), seed=3, index=9, size=(1280, 720))
    without_noise = plan_augment(AugmentConfig.from_params({**every().to_params(), "noise": {"p": 0.0}}), seed=3, index=9, size=(1280, 720))
    assert without_noise.noise is None and with_noise.noise is not None
    for name in AUGMENTATIONS:
        if name != "noise":
            assert getattr(without_noise, name) == getattr(with_noise, name)


def test_probabilities_are_honoured_over_many_frames():
    config = AugmentConfig.from_params({"motion_blur": {"p": 0.3}, "noise": {"p": 0.0}, "jpeg": {"p": 1.0}})
    plans = [plan_augment(config, seed=1, index=i, size=(640, 480)) for i in range(2000)]
    assert 0.26 < np.mean([p.motion_blur is not None for p in plans]) < 0.34
    assert not any(p.noise is not None for p in plans)
    assert all(35 <= p.jpeg <= 90 for p in plans)


def test_the_input_is_never_modified_and_an_empty_plan_passes_it_through(frame):
    before = frame.copy()
    augment_image(frame, every(), seed=1, index=1)
    assert np.array_equal(frame, before)
    off = AugmentConfig.from_params({name: {"p": 0.0} for name in AUGMENTATIONS})
    assert augment_image(frame, off, seed=1, index=1) is frame


# -- each augmentation does what it claims ----------------------------------------------------


def test_motion_blur_lowers_the_laplacian_variance_along_its_direction_most(frame):
    along_belt = motion_blur(frame, 10, 0)
    across_belt = motion_blur(frame, 10, 90)
    # blurring along x removes x detail far more than y detail, and the other way round
    assert second_derivative_var(along_belt, "x") < 0.3 * second_derivative_var(frame, "x")
    assert second_derivative_var(along_belt, "x") / second_derivative_var(frame, "x") < 0.5 * second_derivative_var(along_belt, "y") / second_derivative_var(frame, "y")
    assert second_derivative_var(across_belt, "y") < 0.3 * second_derivative_var(frame, "y")
    # longer streaks blur more
    assert second_derivative_var(motion_blur(frame, 20, 0), "x") < second_derivative_var(along_belt, "x")


def test_a_motion_kernel_is_a_normalised_streak_of_the_asked_length_and_angle():
    k = motion_kernel(9.0, 0.0)
    assert k.shape[0] == 1 and abs(k.sum() - 1) < 1e-6
    for angle in (30.0, 45.0, -60.0):
        kernel = motion_kernel(12.0, angle)
        ys, xs = np.mgrid[: kernel.shape[0], : kernel.shape[1]]
        m = cv2.moments(kernel.astype(np.float64))
        # principal axis of the kernel's mass, with image y pointing down (hence the minus)
        axis_deg = np.degrees(0.5 * np.arctan2(-2 * m["mu11"], m["mu20"] - m["mu02"]))
        assert axis_deg == pytest.approx(angle, abs=2.0)
        length = 2 * np.sqrt(3 * (m["mu20"] + m["mu02"]) / m["m00"])  # a uniform segment's var = L^2 / 12
        assert length == pytest.approx(12.0, rel=0.1)
    assert motion_kernel(0.5, 30.0).shape == (1, 1)


def test_brightness_moves_the_mean_and_contrast_keeps_it(frame):
    assert grey_mean(brightness_contrast(frame, 25, 1.0)) == pytest.approx(grey_mean(frame) + 25, abs=1.5)
    assert grey_mean(brightness_contrast(frame, -25, 1.0)) == pytest.approx(grey_mean(frame) - 25, abs=1.5)
    flat = brightness_contrast(frame, 0, 0.5)
    assert grey_mean(flat) == pytest.approx(grey_mean(frame), abs=1.5)
    assert cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY).std() == pytest.approx(0.5 * cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).std(), rel=0.05)


def test_gamma_bends_the_tone_curve_and_keeps_black_and_white():
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    lifted, darkened = gamma_correct(ramp, 0.5), gamma_correct(ramp, 2.0)
    assert lifted[0, 128, 0] > 170 and darkened[0, 128, 0] < 70
    for image in (lifted, darkened):
        assert image[0, 0, 0] == 0 and image[0, 255, 0] == 255
    with pytest.raises(ValueError, match="gamma: expected a number > 0"):
        gamma_correct(ramp, 0.0)


def test_noise_has_the_asked_sigma_and_raises_high_frequency_energy():
    smooth = np.full((240, 320, 3), 120, np.uint8)
    noisy = sensor_noise(smooth, 6.0, np.random.default_rng(0))
    diff = noisy.astype(np.int16) - smooth
    assert diff.std() == pytest.approx(6.0, rel=0.05)
    assert abs(diff.mean()) < 0.2
    assert second_derivative_var(noisy, "x") > 100 * (second_derivative_var(smooth, "x") + 1)


def blockiness(image: np.ndarray) -> float:
    """Mean jump across 8-px block edges over the mean jump inside blocks (1 = no block structure)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    jumps = np.abs(np.diff(grey, axis=1)).mean(axis=0)  # jump between column j and j+1
    edges = jumps[7::8]
    inside = np.delete(jumps, np.arange(7, len(jumps), 8))
    return float(edges.mean() / inside.mean())


def test_jpeg_creates_8x8_blockiness(frame):
    assert blockiness(frame) == pytest.approx(1.0, abs=0.15)
    assert blockiness(jpeg_artefacts(frame, 10)) > 1.5
    assert blockiness(jpeg_artefacts(frame, 10)) > blockiness(jpeg_artefacts(frame, 80))


def test_perspective_moves_the_corners_by_the_asked_shift_and_boxes_follow():
    image = np.zeros((480, 640, 3), np.uint8)
    cv2.rectangle(image, (300, 200), (360, 260), (255, 255, 255), -1)
    shifts = np.array([[20, 10], [-15, 12], [10, -8], [-12, -14]], np.float64)
    warped, H = perspective_warp(image, shifts)
    corners = np.array([[[0, 0]], [[640, 0]], [[640, 480]], [[0, 480]]], np.float64)
    assert np.allclose(cv2.perspectiveTransform(corners, H).reshape(4, 2), corners.reshape(4, 2) + shifts, atol=1e-6)
    boxes, keep = warp_boxes(np.array([[300, 200, 361, 261]]), H, 640, 480)
    ys, xs = np.nonzero(warped[:, :, 0] > 127)
    x0, y0, x1, y1 = boxes[0]
    assert keep.tolist() == [True]
    assert x0 - 1 <= xs.min() and xs.max() + 1 <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() + 1 <= y1 + 1
    assert abs(xs.min() - x0) < 3 and abs(ys.max() + 1 - y1) < 3


def test_boxes_pushed_out_of_the_image_are_dropped():
    H = np.array([[1, 0, -100], [0, 1, 0], [0, 0, 1]], np.float64)  # everything 100 px left
    boxes, keep = warp_boxes(np.array([[10, 10, 60, 60], [300, 10, 400, 60]]), H, 640, 480)
    assert keep.tolist() == [False, True]
    assert boxes.tolist() == [[200, 10, 300, 60]]


def test_labelled_augmentation_keeps_classes_and_boxes_in_step(frame):
    conveyor_boxes = np.array([[100, 100, 300, 250], [1250, 300, 1400, 400]], np.float32)
    config = only("perspective", max_shift_frac=0.05)
    image, boxes, keep, plan = augment_labelled(frame, conveyor_boxes, config, seed=2, index=0)
    assert plan.perspective is not None and image.shape == frame.shape
    assert len(boxes) == int(keep.sum())
    assert (boxes[:, 2] <= 1280).all() and (boxes[:, 3] <= 720).all()


# -- configuration --------------------------------------------------------------------------


def test_the_defaults_round_trip_through_params():
    config = AugmentConfig()
    assert AugmentConfig.from_params(config.to_params()) == config


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"motion_blur": {"length": [1, 2]}}, r"motion_blur\.length: unknown parameter; expected one of p, length_px, angle_deg"),
        ({"noise": {"sigma": [8, 2]}}, r"noise\.sigma: expected low <= high, got \[8, 2\]"),
        ({"jpeg": {"p": 1.5}}, r"jpeg\.p: expected a probability in \[0, 1\], got 1\.5"),
        ({"gamma": {"gamma": [0, 2]}}, r"gamma\.gamma: expected values > 0"),
        ({"perspective": {"max_shift_frac": 0.5}}, r"perspective\.max_shift_frac: expected a value in \[0, 0\.2\]"),
        ({"brightness_contrast": {"brightness": 10}}, r"brightness_contrast\.brightness: expected \[low, high\], got 10"),
    ],
)
def test_bad_parameters_name_the_parameter_and_what_was_expected(params, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_params(params)


def test_a_non_bgr_image_is_refused_by_name():
    with pytest.raises(ValueError, match=r"image: expected a uint8 H x W x 3 BGR array, got float32 array of shape \(4, 4, 3\)"):
        augment_image(np.zeros((4, 4, 3), np.float32), AugmentConfig(), 0, 0)
