"""``lineguard sim eval``: run a recipe on the simulated line and score every part.

The recipe runs unchanged on the sim clock; its ``camera.sim`` node is pointed at the scenario,
its PLC output (if any) at a virtual PLC on loopback that shares the clock and knows the truth.
Taps watch the vote's verdicts (and the inspection's per-frame findings, for the single-frame
comparison) without changing the graph.

Scoring is per physical part (``PartTruth``):

- a part is *rejected* when the virtual PLC's gate rejected it (with a PLC output in the recipe) or
  else when a verdict about it said reject;
- *positive* = defective; precision, recall and F1 over parts; escapes = defective and passed;
  false rejects = good and rejected; per defect kind and per part type;
- verdicts are matched to parts by the sim-only true part id when the detector knows it, else by
  belt position at the last sighting; a part with several verdicts counts its extra verdicts as ID
  switches, a verdict matching no part as a ghost;
- *single-frame*: the decision the inspection would make from the first frame it judged each part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineguard.runtime.clock import Clock, SimEventLoop
from lineguard.runtime.compiler import CompiledGraph
from lineguard.runtime.envelope import Envelope
from lineguard.runtime.executor import Executor, RunReport
from lineguard.sim.truth import BeltGeometry, PartTruth

PLC_TYPES = {"plc.modbus": "modbus", "plc.opcua": "opcua"}


class EvalSetupError(ValueError):
    """The recipe cannot be evaluated on the simulated line (says which node or param)."""


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def count(pairs: Sequence[tuple[bool, bool]]) -> Counts:
    """(defective, rejected) pairs → confusion counts."""
    tp = sum(d and r for d, r in pairs)
    fp = sum((not d) and r for d, r in pairs)
    fn = sum(d and not r for d, r in pairs)
    return Counts(tp, fp, fn, len(pairs) - tp - fp - fn)


@dataclass
class PartOutcome:
    part: PartTruth
    verdicts: list[Any] = field(default_factory=list)
    rejected: bool = False
    single_frame_reject: bool | None = None
    plc: dict[str, Any] | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(sorted({r for v in self.verdicts for r in v.reasons}))

    def to_json(self) -> dict[str, Any]:
        return {
            "part_id": self.part.part_id,
            "part_type": self.part.part_type,
            "defective": self.part.defective,
            "defect_kinds": list(self.part.defect_kinds),
            "rejected": self.rejected,
            "verdicts": [v.to_json() for v in self.verdicts],
            "reasons": list(self.reasons),
            "single_frame_reject": self.single_frame_reject,
            "plc": self.plc,
        }


@dataclass
class EvalResult:
    recipe: str
    scenario: str
    seed: int
    parts: list[PartOutcome]
    ghosts: list[Any]
    run: RunReport
    plc_summary: dict[str, Any] | None
    margins_ms: list[float]  # decision → gate arrival slack per verdict
    audit: list[Any]
    latencies_ms: list[float] = field(default_factory=list)  # part's last sighting → its verdict emitted

    # -- aggregates ---------------------------------------------------------------------------
    def counts(self, parts: Sequence[PartOutcome] | None = None) -> Counts:
        return count([(o.part.defective, o.rejected) for o in (self.parts if parts is None else parts)])

    def single_frame_counts(self) -> Counts:
        judged = [o for o in self.parts if o.single_frame_reject is not None]
        unjudged = [o for o in self.parts if o.single_frame_reject is None]
        # A part the inspection never judged gets no single-frame reject: it would pass.
        return count([(o.part.defective, bool(o.single_frame_reject)) for o in judged] + [(o.part.defective, False) for o in unjudged])

    @property
    def id_switches(self) -> int:
        return sum(max(0, len(o.verdicts) - 1) for o in self.parts)

    @property
    def insufficient_evidence(self) -> int:
        return sum(1 for o in self.parts for v in o.verdicts if "insufficient_evidence" in v.reasons)

    @property
    def unseen(self) -> int:
        return sum(1 for o in self.parts if not o.verdicts)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        kinds = sorted({k for o in self.parts for k in o.part.defect_kinds})
        for kind in kinds:
            with_kind = [o for o in self.parts if kind in o.part.defect_kinds]
            rejected = sum(o.rejected for o in with_kind)
            right_reason = sum(o.rejected and kind in o.reasons for o in with_kind)
            # rejected for something the part does not have as well (a reason that is noise)
            other = sum(o.rejected and bool(set(o.reasons) - set(o.part.defect_kinds)) for o in with_kind)
            out[kind] = {"parts": len(with_kind), "rejected": rejected, "recall": round(rejected / len(with_kind), 4), "right_reason": right_reason, "other_reasons": other}
        return out

    def by_type(self) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[PartOutcome]] = defaultdict(list)
        for o in self.parts:
            groups[o.part.part_type].append(o)
        return {t: {"parts": len(g), **self.counts(g).to_json()} for t, g in sorted(groups.items())}

    def summary(self) -> dict[str, Any]:
        c = self.counts()
        single = self.single_frame_counts()
        n = len(self.parts)
        return {
            "recipe": self.recipe,
            "scenario": self.scenario,
            "seed": self.seed,
            "parts": n,
            "defective": sum(o.part.defective for o in self.parts),
            **c.to_json(),
            "escapes": c.fn,
            "false_rejects": c.fp,
            "insufficient_evidence": self.insufficient_evidence,
            "unseen_parts": self.unseen,
            "id_switches": self.id_switches,
            "id_switch_rate": round(self.id_switches / n, 4) if n else 0.0,
            "ghost_verdicts": len(self.ghosts),
            "single_frame": single.to_json(),
            "vote_f1_minus_single_frame_f1": round(c.f1 - single.f1, 4),
            "by_defect_kind": self.by_kind(),
            "by_part_type": self.by_type(),
            "decision_margin_ms": _describe(self.margins_ms),
            "verdict_latency_ms": _describe(self.latencies_ms),
            "plc": self.plc_summary,
            "run": {"status": self.run.status, "clock_s": round(self.run.sim_duration_s, 3), "wall_s": round(self.run.wall_duration_s, 3), "camera_dropped": _camera_drops(self.run)},
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "parts": [o.to_json() for o in self.parts], "ghosts": [g.to_json() for g in self.ghosts]}


def _describe(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    # The low tail matters: p01 = 99 % of decisions left at least this much time before the gate.
    return {"min": round(float(a.min()), 2), "p01": round(float(np.percentile(a, 1)), 2), "p50": round(float(np.percentile(a, 50)), 2), "max": round(float(a.max()), 2)}


def _camera_drops(run: RunReport) -> int:
    return sum(sum(n["dropped"].values()) for n in run.nodes if n["type"].startswith("camera."))


# -- setting up the run ------------------------------------------------------------------------------
def nodes_of_type(graph: CompiledGraph, prefix: str) -> list[str]:
    return [nid for nid, node in graph.nodes.items() if node.cls.type_name == prefix or node.cls.type_name.startswith(prefix + ".")]


def outputs_of_kind(graph: CompiledGraph, kind: str) -> list[str]:
    return [f"{nid}.{port}" for nid, node in graph.nodes.items() for port, out in node.cls.outputs.items() if out.kind == kind]


def camera_node(graph: CompiledGraph) -> str:
    cams = [nid for nid, n in graph.nodes.items() if n.cls.type_name == "camera.sim"]
    if len(cams) != 1:
        raise EvalSetupError(f"{graph.file}: expected exactly one camera.sim node to evaluate on the simulated line, got {len(cams)} ({', '.join(cams) or 'none'})")
    return cams[0]


def plc_node(graph: CompiledGraph) -> tuple[str, str] | None:
    plcs = [(nid, PLC_TYPES[n.cls.type_name]) for nid, n in graph.nodes.items() if n.cls.type_name in PLC_TYPES]
    if len(plcs) > 1:
        raise EvalSetupError(f"{graph.file}: expected at most one PLC output, got {', '.join(n for n, _ in plcs)}")
    return plcs[0] if plcs else None


def geometry_of(graph: CompiledGraph, scenario) -> BeltGeometry:
    line = graph.line
    return BeltGeometry(
        belt_speed_mm_s=float(line["belt_speed_mm_s"]),
        reject_distance_mm=float(line["reject_distance_mm"]),
        encoder_counts_per_mm=float(line["encoder_counts_per_mm"]),
        gate_window_mm=scenario.belt.gate_window_mm,
    )


# -- matching verdicts to parts ------------------------------------------------------------------------
def match_verdicts(verdicts: Sequence[Any], parts: Sequence[PartTruth], geometry: BeltGeometry) -> tuple[dict[int, list[Any]], list[Any]]:
    """Truth part id → its verdicts; and the verdicts that match no part (ghosts)."""
    by_part: dict[int, list[Any]] = defaultdict(list)
    ghosts = []
    known = {p.part_id for p in parts}
    for v in verdicts:
        pid = getattr(v, "truth_part_id", None)
        if pid is None or pid not in known:
            pid = _nearest_part(v, parts, geometry)
        if pid is None:
            ghosts.append(v)
        else:
            by_part[pid].append(v)
    return by_part, ghosts


def _nearest_part(v: Any, parts: Sequence[PartTruth], geometry: BeltGeometry) -> int | None:
    best, best_d = None, None
    for p in parts:
        d = abs(p.position_mm(geometry, v.last_t_ns) - v.position_mm)
        if d <= p.length_mm / 2 and (best_d is None or d < best_d):
            best, best_d = p.part_id, d
    return best


# -- the run -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("simulating the line"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("frames", total=total)
        yield lambda n=1: progress.advance(task, n)


def evaluate(graph: CompiledGraph, *, scenario_label: str = "", progress: bool = False, plc_port: int | None = None, clock: str = "sim") -> EvalResult:
    """Run ``graph`` (already pointed at its scenario) and score every part; on the sim clock by
    default, or in real time (``clock="wall"``, as the demo does).

    With a PLC output in the graph, ``plc_port`` is where its virtual PLC listens (the caller
    compiled the graph with the node pointed there)."""
    from lineguard.nodes.camera_sim import scenario_for
    from lineguard.sim.conveyor import Conveyor

    cam = camera_node(graph)
    scenario = scenario_for(graph.nodes[cam].params, graph.line)
    conveyor = Conveyor(scenario)
    parts = list(conveyor.parts)
    geometry = geometry_of(graph, scenario)
    verdict_ports = outputs_of_kind(graph, "part_verdict")
    if not verdict_ports:
        raise EvalSetupError(f"{graph.file}: expected a node with a part_verdict output (vote.part) to score, got none")
    findings_ports = outputs_of_kind(graph, "part_findings")
    plc = plc_node(graph)

    verdict_envelopes: list[Envelope] = []
    emitted_ns: list[int] = []  # when each verdict left the vote, on the run's clock
    first_judgement: dict[int, bool] = {}
    audit: list[Any] = []

    def on_findings(envelope: Envelope) -> None:
        for f in envelope.payload.parts:
            if f.inspected and f.track.track_id not in first_judgement:
                first_judgement[f.track.track_id] = bool(f.defects)

    async def main() -> tuple[RunReport, dict[str, Any] | None, dict[int, dict[str, Any]]]:
        clock = Clock()
        with _progress(conveyor.n_frames, progress) as advance:
            def on_verdict(envelope: Envelope) -> None:
                verdict_envelopes.append(envelope)
                emitted_ns.append(clock.now_ns())

            taps = {port: on_verdict for port in verdict_ports}
            taps.update({port: on_findings for port in findings_ports})
            taps[f"{cam}.image"] = lambda env: advance()
            if plc is None:
                run = await Executor(graph, clock=clock, taps=taps).run()
                return run, None, {}
            from lineguard.sim.plc import VirtualPlc

            node_id, protocol = plc
            taps[f"{node_id}.audit"] = audit.append
            virtual = VirtualPlc(geometry, parts, clock, mode=graph.nodes[node_id].params["mode"])
            server_cls = _server_class(protocol)
            async with server_cls(virtual, port=plc_port):
                try:
                    run = await Executor(graph, clock=clock, taps=taps, on_flow_start=[virtual.start]).run()
                    async with asyncio.timeout(60):
                        await virtual.wait_all_scored()
                finally:
                    virtual.stop()
            report = virtual.report()
            per_part = {p.part_id: _plain(p) for p in report.parts}
            return run, _plain(report.summary), per_part

    with asyncio.Runner(loop_factory=SimEventLoop if clock == "sim" else asyncio.SelectorEventLoop) as runner:
        run, plc_summary, plc_parts = runner.run(main())

    verdicts = [env.payload for env in verdict_envelopes]
    by_part, ghosts = match_verdicts(verdicts, parts, geometry)
    outcomes = []
    for part in parts:
        vs = sorted(by_part.get(part.part_id, []), key=lambda v: v.last_t_ns)
        o = PartOutcome(part, vs)
        if plc is not None:
            o.plc = plc_parts.get(part.part_id)
            o.rejected = bool(o.plc and o.plc.get("rejected"))
        else:
            o.rejected = any(v.verdict == "reject" for v in vs)
        judged = [first_judgement[v.part_id] for v in vs if v.part_id in first_judgement]
        o.single_frame_reject = judged[0] if judged else None
        outcomes.append(o)
    # Decided at the capture time of the frame that decided it (processing takes no sim time).
    margins = [(env.payload.arrival_t_ns - env.t_capture_ns) / 1e6 for env in verdict_envelopes]
    # From the part's last sighting to its verdict leaving the vote: waiting for the part to leave
    # the view (or its track to end), plus processing on a wall clock.
    latencies = [(now - env.payload.last_t_ns) / 1e6 for env, now in zip(verdict_envelopes, emitted_ns)]
    return EvalResult(graph.file, scenario_label or scenario.name, scenario.seed, outcomes, ghosts, run, plc_summary, margins, audit, latencies)


def _server_class(protocol: str):
    if protocol == "modbus":
        from lineguard.sim.plc_modbus import ModbusPlcServer

        return ModbusPlcServer
    from lineguard.sim.plc_opcua import OpcUaPlcServer

    return OpcUaPlcServer


def _plain(obj: Any) -> Any:
    """Dataclass-ish report objects → JSON-able dicts."""
    if hasattr(obj, "to_json"):
        return obj.to_json()
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    return obj
