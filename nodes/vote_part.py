"""``vote.part``: one verdict per part, from all the frames that saw it."""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from lineguard.nodes.inspect_rules import MISALIGNED, MISSING, SCRATCH
from lineguard.nodes.parts_model import (
    INSUFFICIENT_EVIDENCE,
    NS_PER_S,
    SCRATCH_ON_FLAGGED_COMPONENT,
    FrameFindings,
    PartFindings,
    PartVerdict,
    belt_travel_mm,
)
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.node import InPort, Node, OutPort

_EVIDENCE_FRAMES = 16  # frame ids kept per defect kind (the first ones that showed it)
_DECIDED_MEMORY = 256  # ids of decided parts remembered (a part is in view for seconds: a few dozen suffice)


@dataclass
class _Kind:
    """The k-of-n window of one defect kind on one part."""

    window: deque
    best: float = 0.0
    frames: list[int] = field(default_factory=list)
    judged: int = 0  # frames that could judge it
    flagged: int = 0  # of those, frames that showed it


@dataclass
class _Part:
    track_id: int
    first_frame_id: int
    first_t_ns: int
    seen: int = 0
    inspected: int = 0
    types: Counter = field(default_factory=Counter)
    kinds: dict[str, _Kind] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    last: PartFindings | None = None
    last_frame_id: int = 0
    last_t_ns: int = 0
    last_encoder: int | None = None
    last_travel_mm: float = 0.0
    truth: int | None = None


class PartVote(Node):
    """Decides each part once: pass, or reject with the defect kinds that were seen often enough.

    A defect kind counts when it was seen in at least ``k`` of ``n`` consecutive frames that could
    judge it (``weighting: confidence`` sums the findings' confidences instead of counting them,
    so ``k`` is then a total confidence), and, for the kinds in ``min_fraction``, in at least that
    share of all the frames that judged it (a hand over a good board hides components for a while;
    a missing one is missing throughout). A part inspected in fewer than ``min_frames`` frames
    (whole part in view) is ``insufficient_evidence``; the ``insufficient_evidence`` policy says
    what happens to it, and defaults to ``reject`` (fail safe).

    ``scratch_on_flagged_component`` (``inspect.surface``'s line on a component the rules flagged)
    is no reason of its own: when it passes the vote it is a ``scratch``, unless
    ``missing_component`` or ``misaligned`` passed too, which name the same thing.

    The verdict is decided when the part's centre crosses ``exit_x_px`` (image column), or when its
    track ends (it left the image or stayed lost), or at the end of the stream (``flush``): exactly
    one verdict per track, never none. A part not seen for ``stale_frames`` frames whose track never
    ended (a tracker restarted under it) is decided then, so state stays bounded on a line that
    runs for months. Later sightings of a decided part are ignored, and so is a
    track that re-identifies a part already decided (an id switch).

    The verdict predicts when the part centre reaches the reject gate, the line's
    ``reject_distance_mm`` downstream of the camera axis: arrival encoder = encoder at the last
    sighting + (reject_distance_mm - part position) x encoder_counts_per_mm; arrival time likewise
    from the belt speed.

    Example:
        vote:
          type: vote.part
          params: {k: 3, n: 5, min_frames: 3, exit_x_px: 560}
          in: {findings: insp.findings}
    """

    type_name = "vote.part"
    version = 1
    inputs = {"findings": InPort("part_findings", queue=8)}
    outputs = {"verdicts": OutPort("part_verdict", "one lineguard.nodes.parts_model.PartVerdict per part")}
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "k": {"type": "number", "exclusiveMinimum": 0, "default": 3, "description": "Frames (or total confidence) a defect needs within n."},
            "n": {"type": "integer", "minimum": 1, "default": 5, "description": "Window of consecutive judging frames."},
            "weighting": {"enum": ["count", "confidence"], "default": "count"},
            "min_frames": {"type": "integer", "minimum": 1, "default": 3, "description": "Frames with the whole part in view needed for a verdict."},
            "insufficient_evidence": {"enum": ["reject", "pass"], "default": "reject", "description": "Verdict for a part seen too little."},
            "min_fraction": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                "default": {"missing_component": 0.5, "misaligned": 0.5},
                "description": "Per defect kind: it must also show in at least this fraction of all the frames that judged it. A missing or misplaced component stays so for the whole pass; an operator's hand over a good part hides its components only for a while.",
            },
            "exit_x_px": {"type": ["number", "null"], "minimum": 0, "default": None, "description": "Decide when the part centre crosses this image column; null: when its track ends."},
            "stale_frames": {"type": "integer", "minimum": 1, "default": 300, "description": "Decide a part not seen for this many frames whose track never ended (more than the tracker's max_lost_frames)."},
        },
    }

    @classmethod
    def check_params(cls, params, line):
        if params["k"] > params["n"]:
            return [("k", f"expected at most n ({params['n']}), got {params['k']}")]
        return []

    async def open(self) -> None:
        self.parts: dict[int, _Part] = {}
        self.decided: OrderedDict[int, None] = OrderedDict()
        self.last_envelope: Envelope | None = None

    async def process(self, port: str, envelope: Envelope) -> None:
        frame: FrameFindings = envelope.payload
        self.last_envelope = envelope
        travel_mm = belt_travel_mm(envelope, self.ctx.line)
        exit_x = self.params["exit_x_px"]
        for findings in frame.parts:
            tid = findings.track.track_id
            if tid in self.decided:
                continue
            previous = findings.track.reidentified_from
            if tid not in self.parts and previous is not None and previous in self.decided:
                self._remember(tid)  # the same part again, after its verdict: not a second one
                self.ctx.count("reidentified_after_verdict")
                continue
            part = self.parts.get(tid)
            if part is None:
                part = self.parts[tid] = _Part(tid, envelope.frame_id, envelope.t_capture_ns)
            self._observe(part, findings, envelope, travel_mm)
            if exit_x is not None and findings.track.centre_x_px >= exit_x:
                await self._decide(part, envelope, "exit_line")
        for tid in frame.ended:
            part = self.parts.get(tid)
            if part is not None:
                await self._decide(part, envelope, "track_ended")
        stale = [p for p in self.parts.values() if envelope.frame_id - p.last_frame_id > self.params["stale_frames"]]
        for part in sorted(stale, key=lambda p: (p.first_frame_id, p.track_id)):
            self.ctx.count("stale_part_decided")
            await self._decide(part, envelope, "stale")

    async def flush(self) -> None:
        """End of stream: every part still open gets its verdict now, in the order they came."""
        if self.last_envelope is None:
            return
        for part in sorted(self.parts.values(), key=lambda p: (p.first_frame_id, p.track_id)):
            await self._decide(part, self.last_envelope, "end_of_stream")

    # -- helpers -------------------------------------------------------------------------------------

    def _observe(self, part: _Part, f: PartFindings, envelope: Envelope, travel_mm: float) -> None:
        part.seen += 1
        part.inspected += int(f.inspected)
        if len(part.types) < 8 or f.track.part_type in part.types:
            part.types[f.track.part_type] += 1
        part.last, part.last_frame_id, part.last_t_ns = f, envelope.frame_id, envelope.t_capture_ns
        part.last_encoder, part.last_travel_mm = envelope.encoder, travel_mm
        part.truth = f.track.truth_part_id if f.track.truth_part_id is not None else part.truth
        weighted = self.params["weighting"] == "confidence"
        for kind in set(f.judged) | set(f.defects):
            if kind not in part.kinds and len(part.kinds) >= 16:
                continue  # a detector with an unbounded vocabulary must not grow the state
            state = part.kinds.setdefault(kind, _Kind(deque(maxlen=self.params["n"])))
            seen = f.defects.get(kind)
            state.window.append(0.0 if seen is None else (seen if weighted else 1.0))
            state.judged += 1
            state.flagged += seen is not None
            state.best = max(state.best, sum(state.window))
            if seen is not None and len(state.frames) < _EVIDENCE_FRAMES:
                state.frames.append(envelope.frame_id)
        for note in f.notes:
            if note not in part.notes and len(part.notes) < 8:
                part.notes.append(note)

    async def _decide(self, part: _Part, envelope: Envelope, decided_by: str) -> None:
        p, line = self.params, self.ctx.line
        del self.parts[part.track_id]
        self._remember(part.track_id)
        share = p["min_fraction"]
        seen_enough = [kind for kind, s in part.kinds.items() if s.best >= p["k"] - 1e-9]
        reasons = sorted(kind for kind in seen_enough if part.kinds[kind].flagged >= share.get(kind, 0.0) * part.kinds[kind].judged)
        if len(reasons) < len(seen_enough):  # k of n reached, but only for a while: counted, so a line can see how often
            self.ctx.count("defect_below_min_fraction", len(seen_enough) - len(reasons))
        evidence = {kind: tuple(part.kinds[kind].frames) for kind in reasons}
        if SCRATCH_ON_FLAGGED_COMPONENT in reasons:
            reasons.remove(SCRATCH_ON_FLAGGED_COMPONENT)
            frames = evidence.pop(SCRATCH_ON_FLAGGED_COMPONENT)
            if not {MISSING, MISALIGNED} & set(reasons):  # the rules' flag did not hold: a scratch it is
                self.ctx.count("surface_line_at_unconfirmed_component")
                if SCRATCH not in reasons:
                    reasons = sorted([*reasons, SCRATCH])
                    evidence[SCRATCH] = frames
        verdict = "reject" if reasons else "pass"
        if part.inspected < p["min_frames"]:
            reasons.append(INSUFFICIENT_EVIDENCE)
            if p["insufficient_evidence"] == "reject":
                verdict = "reject"
        assert part.last is not None
        reject_mm = float(line.get("reject_distance_mm", 800.0))
        position_mm = part.last.track.position_mm
        to_go_mm = reject_mm - position_mm
        arrival_t = part.last_t_ns + round(to_go_mm / float(line["belt_speed_mm_s"]) * NS_PER_S)
        arrival_enc = None if part.last_encoder is None else round(part.last_encoder + to_go_mm * float(line["encoder_counts_per_mm"]))
        result = PartVerdict(
            part_id=part.track_id,
            part_type=part.types.most_common(1)[0][0],
            verdict=verdict,
            reasons=tuple(reasons),
            evidence=evidence,
            frames_seen=part.seen,
            frames_inspected=part.inspected,
            first_frame_id=part.first_frame_id,
            last_frame_id=part.last_frame_id,
            first_t_ns=part.first_t_ns,
            last_t_ns=part.last_t_ns,
            last_encoder=part.last_encoder,
            position_mm=position_mm,
            reject_distance_mm=reject_mm,
            arrival_t_ns=arrival_t,
            arrival_encoder=arrival_enc,
            decided_by=decided_by,
            scores={kind: s.best for kind, s in part.kinds.items()},
            notes=tuple(part.notes),
            truth_part_id=part.truth,
        )
        self.ctx.count(f"verdict_{verdict}")
        await self.ctx.emit("verdicts", Envelope(envelope.frame_id, envelope.t_capture_ns, result, envelope.encoder))

    def _remember(self, track_id: int) -> None:
        self.decided[track_id] = None
        while len(self.decided) > _DECIDED_MEMORY:
            self.decided.popitem(last=False)
