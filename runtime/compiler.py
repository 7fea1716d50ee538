"""Recipe → validated, immutable graph.

The compiler runs every check and collects every error before it gives up: recipe shape, node
types, params, ports, port kinds, required and double-wired inputs, cycles. Unused outputs are
warnings. The result is a :class:`CompiledGraph` (a frozen networkx DiGraph in topological order)
that the executor instantiates; compiling never starts anything.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from lineguard.runtime import schema as schemas
from lineguard.runtime.errors import Diagnostic, Mark, RecipeError
from lineguard.runtime.loader import JsonPath, LoadedDocument, load_file, parse_scalar
from lineguard.runtime.node import ANY_KIND, QUEUE_POLICIES, Node
from lineguard.runtime.registry import Registry, default_registry


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int
    within_s: float = 60.0
    backoff_s: float = 0.5


@dataclass(frozen=True)
class Wire:
    """One edge: output ``src_node.src_port`` feeds input ``dst_node.dst_port``."""

    src_node: str
    src_port: str
    dst_node: str
    dst_port: str
    kind: str
    queue: int
    policy: str
    mark: Mark

    @property
    def name(self) -> str:
        return f"{self.src_node}.{self.src_port}->{self.dst_node}.{self.dst_port}"


@dataclass(frozen=True)
class CompiledNode:
    id: str
    cls: type[Node]
    params: Mapping[str, Any]
    restart: RestartPolicy | None
    mark: Mark

    @property
    def type_id(self) -> str:
        return self.cls.type_id()


@dataclass(frozen=True)
class CompiledGraph:
    file: str
    line: Mapping[str, Any]
    clock: str
    nodes: Mapping[str, CompiledNode]
    wires: tuple[Wire, ...]
    order: tuple[str, ...]
    dag: nx.DiGraph = field(repr=False)
    warnings: tuple[Diagnostic, ...] = ()

    def inputs_of(self, node_id: str) -> tuple[Wire, ...]:
        return tuple(w for w in self.wires if w.dst_node == node_id)

    def outputs_of(self, node_id: str) -> tuple[Wire, ...]:
        return tuple(w for w in self.wires if w.src_node == node_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": schemas.thaw(self.line),
            "clock": self.clock,
            "order": list(self.order),
            "nodes": {
                nid: {"type": n.type_id, "params": schemas.thaw(n.params), "line": n.mark.line}
                for nid, n in self.nodes.items()
            },
            "edges": [
                {"from": f"{w.src_node}.{w.src_port}", "to": f"{w.dst_node}.{w.dst_port}", "kind": w.kind, "queue": w.queue, "policy": w.policy}
                for w in self.wires
            ],
            "warnings": [str(d) for d in self.warnings],
        }

    def to_dot(self) -> str:
        lines = [f'digraph "{Path(self.file).stem}" {{', "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for nid in self.order:
            lines.append(f'  "{nid}" [label="{nid}\\n{self.nodes[nid].type_id}"];')
        for w in self.wires:
            lines.append(f'  "{w.src_node}" -> "{w.dst_node}" [label="{w.src_port}→{w.dst_port}\\n{w.kind} [{w.queue}, {w.policy}]"];')
        lines.append("}")
        return "\n".join(lines)


class _Collector:
    def __init__(self, doc: LoadedDocument) -> None:
        self.doc = doc
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: JsonPath, message: str, *, at_key: bool = False, **where: str | None) -> None:
        mark = self.doc.source.key(path) if at_key else self.doc.source.value(path)
        self.errors.append(Diagnostic(mark, message, **where))

    def warn(self, path: JsonPath, message: str, **where: str | None) -> None:
        self.warnings.append(Diagnostic(self.doc.source.key(path), message, severity="warning", **where))


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _wire_entries(value: Any) -> list[tuple[int | None, Any]]:
    if isinstance(value, list):
        return list(enumerate(value))
    return [(None, value)]


def compile_document(doc: LoadedDocument, registry: Registry | None = None) -> CompiledGraph:
    """Compile a loaded recipe. Raises :class:`RecipeError` carrying every error found."""
    registry = registry if registry is not None else default_registry()
    c = _Collector(doc)
    data = doc.data

    # 1. The recipe's own shape.
    for p in schemas.problems(schemas.recipe_schema(), data):
        node, param, port = _where(p.path)
        c.error(p.path, p.message, at_key=p.at_key, node=node, param=param, port=port)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise RecipeError(c.errors or [Diagnostic(Mark(doc.source.file, 1, 1), "expected a mapping with 'version' and 'nodes'")])
    line_schema = schemas.recipe_schema()["$defs"]["line"]
    line = schemas.apply_defaults(line_schema, data.get("line", {}) if isinstance(data.get("line"), dict) else {})
    clock = data.get("clock", "wall") if data.get("clock") in ("wall", "sim") else "wall"

    # 2. Node types and params.
    raw_nodes: dict[str, Any] = data["nodes"]
    nodes: dict[str, CompiledNode] = {}
    classes: dict[str, type[Node]] = {}
    for nid, spec in raw_nodes.items():
        base: JsonPath = ("nodes", nid)
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue  # already reported by the recipe schema
        try:
            cls = registry.resolve(spec["type"])
        except KeyError as exc:
            c.error(base + ("type",), exc.args[0], node=nid)
            continue
        classes[nid] = cls
        raw_params = spec.get("params", {})
        if not isinstance(raw_params, dict):
            continue  # reported above
        params = schemas.apply_defaults(cls.params_schema, raw_params)
        bad = False
        for p in schemas.problems(cls.params_schema, params):
            c.error(base + ("params",) + p.path, p.message, at_key=p.at_key, node=nid, param=_dotted(p.path) or None)
            bad = True
        if not bad:
            for param, message in cls.check_params(params, line):
                c.error(base + ("params", *param.split(".")), message, node=nid, param=param)
                bad = True
        restart = spec.get("restart")
        policy = None
        if isinstance(restart, dict) and isinstance(restart.get("max_restarts"), int):
            r = schemas.apply_defaults(schemas.recipe_schema()["$defs"]["restart"], restart)
            policy = RestartPolicy(r["max_restarts"], float(r["within_s"]), float(r["backoff_s"]))
        nodes[nid] = CompiledNode(nid, cls, schemas.freeze(params), policy, doc.source.key(base))

    # 3. Wires, ports and kinds.
    wires: list[Wire] = []
    for nid, cls in classes.items():
        spec = raw_nodes[nid]
        base = ("nodes", nid)
        inputs = spec.get("in", {}) if isinstance(spec.get("in", {}), dict) else {}
        for port, value in inputs.items():
            ppath = base + ("in", port)
            if port not in cls.inputs:
                known = sorted(cls.inputs)
                near = difflib.get_close_matches(port, known, n=1, cutoff=0.5)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                c.error(ppath, f"expected an input of {cls.type_id()} ({', '.join(known) or 'it has none'}), got '{port}'{hint}", at_key=True, node=nid, port=port)
                continue
            in_port = cls.inputs[port]
            entries = _wire_entries(value)
            if len(entries) > 1 and not in_port.multiple:
                c.error(ppath, f"expected one wire into input '{port}' (it takes a single source), got {len(entries)}: double-wired", at_key=True, node=nid, port=port)
                continue
            for idx, entry in entries:
                epath = ppath if idx is None else ppath + (idx,)
                ref = entry.get("from") if isinstance(entry, dict) else entry
                if not isinstance(ref, str) or "." not in ref:
                    continue  # reported by the recipe schema
                src, _, src_port = ref.partition(".")
                if src not in raw_nodes:
                    near = difflib.get_close_matches(src, list(raw_nodes), n=1, cutoff=0.5)
                    hint = f" (did you mean '{near[0]}'?)" if near else ""
                    c.error(epath, f"expected a wire from an existing node, got '{ref}': there is no node '{src}'{hint}", node=nid, port=port)
                    continue
                src_cls = classes.get(src)
                if src_cls is None:
                    continue  # its type is unknown: reported there
                if src_port not in src_cls.outputs:
                    known = sorted(src_cls.outputs)
                    near = difflib.get_close_matches(src_port, known, n=1, cutoff=0.5)
                    hint = f" (did you mean '{src}.{near[0]}'?)" if near else ""
                    c.error(epath, f"expected an output of node '{src}' ({src_cls.type_id()}: {', '.join(known) or 'no outputs'}), got '{src_port}'{hint}", node=nid, port=port)
                    continue
                out_kind = src_cls.outputs[src_port].kind
                if in_port.kind != ANY_KIND and out_kind != in_port.kind:
                    c.error(
                        epath,
                        f"expected kind '{in_port.kind}' for input '{nid}.{port}', got kind '{out_kind}' from output '{src}.{src_port}'",
                        node=nid,
                        port=port,
                    )
                    continue
                queue = entry.get("queue", in_port.queue) if isinstance(entry, dict) else in_port.queue
                policy = entry.get("policy", in_port.policy) if isinstance(entry, dict) else in_port.policy
                if type(queue) is not int or queue < 1 or policy not in QUEUE_POLICIES:
                    continue  # reported by the recipe schema
                if in_port.lossless and policy != "block":
                    c.error(
                        epath,
                        f"expected policy 'block' for input '{nid}.{port}', got '{policy}': every {in_port.kind} must arrive ({in_port.lossless})",
                        node=nid,
                        port=port,
                    )
                    continue
                wires.append(Wire(src, src_port, nid, port, out_kind, queue, policy, doc.source.value(epath)))
        for port, in_port in cls.inputs.items():
            if in_port.required and port not in inputs:
                c.error(base, f"expected a wire into required input '{port}' (kind '{in_port.kind}'), got none", at_key=True, node=nid, port=port)

    # 4. The graph: cycles and order.
    dag = nx.DiGraph()
    for nid in raw_nodes:
        dag.add_node(nid)
    for w in wires:
        dag.add_edge(w.src_node, w.dst_node)
    key_mark = lambda n: doc.source.key(("nodes", n))  # noqa: E731
    cycles = []
    for cyc in nx.simple_cycles(dag):
        i = cyc.index(min(cyc, key=key_mark))
        cycles.append(cyc[i:] + cyc[:i])
    for cyc in sorted(cycles, key=lambda cy: key_mark(cy[0])):
        c.error(("nodes", cyc[0]), f"expected an acyclic graph, got a cycle: {' → '.join(cyc + [cyc[0]])}", at_key=True, node=cyc[0])

    # 5. Warnings: outputs nobody reads.
    used = {(w.src_node, w.src_port) for w in wires}
    for nid, cls in classes.items():
        for port, out_port in cls.outputs.items():
            if (nid, port) not in used and not out_port.optional:
                c.warn(("nodes", nid), f"output '{port}' ({cls.outputs[port].kind}) is not wired to anything", node=nid, port=port)

    if c.errors:
        raise RecipeError(c.errors + c.warnings)
    order = tuple(nx.lexicographical_topological_sort(dag, key=key_mark))
    return CompiledGraph(
        file=doc.source.file,
        line=schemas.freeze(line),
        clock=clock,
        nodes={nid: nodes[nid] for nid in order},
        wires=tuple(wires),
        order=order,
        dag=nx.freeze(dag),
        warnings=tuple(sorted(c.warnings, key=lambda d: d.mark)),
    )


def _where(path: JsonPath) -> tuple[str | None, str | None, str | None]:
    """node / param / port named by a path inside the recipe document."""
    if len(path) >= 2 and path[0] == "nodes":
        node = str(path[1])
        if len(path) >= 4 and path[2] == "params":
            return node, _dotted(path[3:]), None
        if len(path) >= 4 and path[2] == "in":
            return node, None, str(path[3])
        return node, None, None
    return None, None, None


# -- command-line overrides ---------------------------------------------------------------------------
def apply_overrides(doc: LoadedDocument, overrides: Sequence[str]) -> LoadedDocument:
    """Apply ``node.param=value`` (or ``node.param.sub=value``) overrides; errors name the option."""
    errors: list[Diagnostic] = []
    data = doc.data
    for text in overrides:
        where = Mark(f"--set {text}", 1, 1)
        target, eq, raw = text.partition("=")
        parts = target.split(".")
        if not eq or len(parts) < 2 or not all(parts):
            errors.append(Diagnostic(where, f"expected NODE.PARAM=VALUE, got '{text}'"))
            continue
        nid, keys = parts[0], parts[1:]
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict) or nid not in nodes or not isinstance(nodes[nid], dict):
            known = sorted(nodes) if isinstance(nodes, dict) else []
            near = difflib.get_close_matches(nid, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            errors.append(Diagnostic(where, f"expected an existing node, got '{nid}'{hint}", node=nid))
            continue
        cursor = nodes[nid].setdefault("params", {})
        path: JsonPath = ("nodes", nid, "params")
        for key in keys[:-1]:
            nxt = cursor.get(key) if isinstance(cursor, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                cursor[key] = nxt
            cursor, path = nxt, path + (key,)
        value_mark = Mark(f"--set {text}", 1, len(target) + 2)
        cursor[keys[-1]] = parse_scalar(raw)
        doc.source.set(path + (keys[-1],), value_mark)
    if errors:
        raise RecipeError(errors)
    return doc


def compile_file(path: str | Path, registry: Registry | None = None, overrides: Sequence[str] = ()) -> CompiledGraph:
    doc = load_file(path)
    if overrides:
        apply_overrides(doc, overrides)
    return compile_document(doc, registry)
