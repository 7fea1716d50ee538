"""``detector.truth``: the simulator's ground truth as detections, with seeded, realistic noise."""

from __future__ import annotations

import numpy as np
import supervision as sv

from lineguard.nodes.parts_model import IMAGE_HW, TRUTH_PART_ID
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort
from lineguard.sim.truth import CLASSES

_RANGE = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}


class TruthDetector(Node):
    """Sim only: a stand-in for the detector that reads ``camera.sim``'s ground truth.

    Emits ``supervision.Detections`` exactly like ``detector.openvino`` (xyxy float32 in image
    pixels, confidence, class_id = index in ``classes``, ``data['class_name']``), so the tracker,
    the inspection rules and the vote can be tested without a trained model. Imperfections are
    seeded per frame (the same seed and frame give the same detections, whatever was dropped
    before): boxes less visible than ``min_visible`` are not seen, a box is missed with
    ``miss_rate`` (or its class's rate in ``class_miss_rates``), box edges move by a Gaussian of
    ``box_jitter_px``, confidences are drawn from ``confidence``, and about
    ``false_positives_per_frame`` boxes of ``false_positive_classes`` appear where nothing is.

    Every box carries ``data['truth_part_id']`` (the true part id, -1 for a false positive) so
    that scorers can match tracks and verdicts to parts; a real detector has no such column.
    ``metadata['image_hw']`` is the image's (height, width), from ``image_size_px``.

    Example:
        det:
          type: detector.truth
          params: {image_size_px: [640, 480], seed: 7, miss_rate: 0.02, box_jitter_px: 0.7}
          in: {truth: cam.truth}
    """

    type_name = "detector.truth"
    version = 1
    inputs = {"truth": InPort("frame_truth", queue=8)}
    outputs = {"detections": OutPort("detections", "supervision.Detections in image pixels, with data['class_name']")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "image_size_px": {
                "description": "[width, height] of the camera's images (camera.sim's camera.resolution); "
                "needed unless the frame truth carries image_hw.",
                "type": ["array", "null"],
                "items": {"type": "integer", "minimum": 1},
                "minItems": 2,
                "maxItems": 2,
                "default": None,
            },
            "classes": {
                "description": "Class names in class-id order; truth boxes of other classes are not detected.",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "uniqueItems": True,
                "default": list(CLASSES),
            },
            "seed": {"type": "integer", "default": 0},
            "min_visible": {"description": "Boxes with a smaller visible fraction are not detected.", "type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
            "miss_rate": {"description": "Chance that a visible box is missed.", "type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
            "class_miss_rates": {
                "description": "Miss rate per class name (replaces miss_rate for that class).",
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                "default": {},
            },
            "box_jitter_px": {"description": "Standard deviation of every box edge's error, px.", "type": "number", "minimum": 0, "default": 0.0},
            "confidence": {**_RANGE, "description": "[low, high] confidence of a true detection.", "default": [0.85, 0.99]},
            "false_positives_per_frame": {"description": "Mean number of false boxes per frame (Poisson).", "type": "number", "minimum": 0, "default": 0.0},
            "false_positive_classes": {"type": ["array", "null"], "items": {"type": "string"}, "default": None, "description": "Classes of false boxes (all classes when null)."},
            "false_positive_confidence": {**_RANGE, "default": [0.3, 0.6]},
            "false_positive_size_px": {**_RANGE, "description": "[low, high] side of a false box, px.", "default": [8, 48]},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        problems = []
        classes = set(params["classes"])
        unknown = sorted(set(params["class_miss_rates"]) - classes)
        if unknown:
            problems.append(("class_miss_rates", f"expected class names from 'classes' {sorted(classes)}, got {unknown}"))
        fp = params["false_positive_classes"]
        if fp is not None and not set(fp) <= classes:
            problems.append(("false_positive_classes", f"expected class names from 'classes' {sorted(classes)}, got {sorted(set(fp) - classes)}"))
        for name in ("confidence", "false_positive_confidence", "false_positive_size_px"):
            lo, hi = params[name]
            if lo > hi or (name != "false_positive_size_px" and hi > 1):
                upper = "" if name == "false_positive_size_px" else " <= 1"
                problems.append((name, f"expected [low, high] with low <= high{upper}, got {list(params[name])}"))
        return problems

    async def open(self) -> None:
        p = self.params
        self.classes = tuple(p["classes"])
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        # truth class id -> (our class id or -1, miss rate)
        self.truth_to_ours = np.array([self.class_index.get(name, -1) for name in CLASSES], np.int64)
        self.miss_by_truth_class = np.array([p["class_miss_rates"].get(name, p["miss_rate"]) for name in CLASSES], np.float64)
        fp_classes = p["false_positive_classes"] if p["false_positive_classes"] is not None else self.classes
        self.fp_class_ids = np.array([self.class_index[name] for name in fp_classes], np.int64)
        self.image_wh = (int(p["image_size_px"][0]), int(p["image_size_px"][1])) if p["image_size_px"] is not None else None

    async def process(self, port: str, envelope: Envelope) -> None:
        await self.ctx.emit("detections", envelope.derive(self.detect(envelope.payload)))

    def detect(self, truth) -> sv.Detections:
        """The detections for one :class:`~lineguard.sim.truth.FrameTruth`."""
        p = self.params
        w, h = self._image_wh_of(truth)
        n = len(truth)
        rng = np.random.default_rng([p["seed"], int(truth.frame_index)])
        # draw every random number in a fixed order whatever is kept, so runs stay comparable
        u_miss = rng.random(n)
        jitter = rng.normal(0.0, 1.0, (n, 4)) * p["box_jitter_px"]
        conf = rng.uniform(*p["confidence"], n)
        n_fp = int(rng.poisson(p["false_positives_per_frame"])) if p["false_positives_per_frame"] > 0 else 0
        truth_cls = np.asarray(truth.class_ids, np.int64)
        ours = self.truth_to_ours[truth_cls] if n else np.zeros(0, np.int64)
        keep = (ours >= 0) & (np.asarray(truth.visible) >= p["min_visible"]) & (u_miss >= self.miss_by_truth_class[truth_cls] if n else np.zeros(0, bool))
        xyxy = np.asarray(truth.boxes_xyxy, np.float64)[keep] + jitter[keep]
        class_id = ours[keep]
        confidence = conf[keep]
        part_ids = np.asarray(truth.part_ids, np.int64)[keep]
        if n_fp:
            side = rng.uniform(*p["false_positive_size_px"], (n_fp, 2))
            centre = rng.uniform(0, 1, (n_fp, 2)) * (w, h)
            fp_xyxy = np.hstack([centre - side / 2, centre + side / 2])
            fp_cls = self.fp_class_ids[rng.integers(len(self.fp_class_ids), size=n_fp)]
            fp_conf = rng.uniform(*p["false_positive_confidence"], n_fp)
            xyxy = np.vstack([xyxy, fp_xyxy])
            class_id = np.concatenate([class_id, fp_cls])
            confidence = np.concatenate([confidence, fp_conf])
            part_ids = np.concatenate([part_ids, np.full(n_fp, -1, np.int64)])
        # a jittered box stays a box inside the image
        xyxy[:, [0, 2]] = np.clip(np.sort(xyxy[:, [0, 2]], axis=1), 0, w)
        xyxy[:, [1, 3]] = np.clip(np.sort(xyxy[:, [1, 3]], axis=1), 0, h)
        ok = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
        return sv.Detections(
            xyxy=xyxy[ok].astype(np.float32),
            confidence=confidence[ok].astype(np.float32),
            class_id=class_id[ok].astype(int),
            data={"class_name": np.array([self.classes[c] for c in class_id[ok]], dtype=str), TRUTH_PART_ID: part_ids[ok]},
            metadata={IMAGE_HW: (h, w)},
        )

    def _image_wh_of(self, truth) -> tuple[int, int]:
        """The image size: from the truth when it says, else from ``image_size_px``. A wrong size
        would put every part at the wrong belt position, so a mismatch fails loud."""
        own = getattr(truth, "image_hw", None)
        if own is not None:
            own = (int(own[1]), int(own[0]))  # as (width, height), like image_size_px
            if self.image_wh is not None and self.image_wh != own:
                raise ValueError(f"image_size_px {list(self.image_wh)} differs from the camera's image size {list(own)}: drop the param or fix it")
            return own
        if self.image_wh is None:
            raise ValueError("detector.truth needs the image size: set params.image_size_px to the camera's resolution, e.g. [640, 480] for 'vga'")
        w, h = self.image_wh
        if len(truth) and (float(truth.boxes_xyxy[:, 2].max()) > w + 1 or float(truth.boxes_xyxy[:, 3].max()) > h + 1):
            raise ValueError(
                f"truth boxes reach ({float(truth.boxes_xyxy[:, 2].max()):.0f}, {float(truth.boxes_xyxy[:, 3].max()):.0f}) px, "
                f"beyond image_size_px {list(self.image_wh)}: set it to the camera's resolution"
            )
        return w, h
