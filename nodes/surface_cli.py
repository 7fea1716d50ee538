"""``lineguard surface show``: what a surface reference holds, as pictures and figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from lineguard.nodes.inspect_surface import ReferenceError, SurfaceInspector, component_windows, edge_sigma, load_references

EDGE_PX = SurfaceInspector.params_schema["properties"]["edge_px"]["default"]  # the search as the node sees it by default


def show(path: str, out: str | None, as_json: bool) -> int:
    try:
        refs, meta = load_references(path)
    except ReferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, ref in sorted(refs.items()):
        # where it looks: the part-wide search (255) and, on their own, its components (128)
        _, mask = edge_sigma(ref, EDGE_PX)
        where = (mask > 0).astype(np.float32) * 255
        windows = component_windows(ref, EDGE_PX, mask)
        for win in windows:
            x0, y0, x1, y1 = win.box
            where[y0:y1, x0:x1][win.search] = 128
        row = {
            "part_type": name,
            "parts": ref.parts,
            "size_px": list(ref.size),
            "searched": round(float((where > 0).mean()), 3),
            "components": len(windows),
            "searched_on_components": round(float((where == 128).mean()), 3),
            "variation_median": round(float(np.median(ref.sigma[ref.mask > 0])), 2) if ref.mask.any() else None,
        }
        if out:
            # side by side: the reference, its variation (bright = varies from part to part), where scratches are looked for
            variation = np.clip(ref.sigma * 255.0 / max(1e-6, float(np.percentile(ref.sigma, 99))), 0, 255)
            picture = np.hstack([np.clip(ref.image, 0, 255), variation, where]).astype(np.uint8)
            row["picture"] = str(Path(out) / f"{name}.png")
            if not cv2.imwrite(row["picture"], picture):
                print(f"error: could not write {row['picture']}", file=sys.stderr)
                return 1
        rows.append(row)
    if as_json:
        print(json.dumps({"file": path, "mm_per_px": meta["mm_per_px"], "part_types": rows}))
        return 0
    print(f"{path}: taught at {meta['mm_per_px']:g} mm/px")
    for r in rows:
        w, h = r["size_px"]
        on_components = f" ({r['searched_on_components']:.0%} on {r['components']} components, each registered on its own)" if r["components"] else ""
        line = f"  {r['part_type']}: {r['parts']} parts, {w}x{h} px, {r['searched']:.0%} of it searched{on_components}, median variation {r['variation_median']} grey"
        print(line + (f" -> {r['picture']}" if "picture" in r else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``lineguard surface`` to the top-level parser's sub-commands."""
    p = subparsers.add_parser("surface", help="surface references of inspect.surface", description="Tools for the golden references of inspect.surface. Teach one with the node's teach: true (see README).")
    sub = p.add_subparsers(dest="surface_command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "show",
        help="what a reference file holds",
        description="Print each part type's reference: parts it was learnt from, size, share of the part searched for scratches. "
        "With --out, write one picture per part type: the reference, its part-to-part variation, and where it looks (white: part-wide; grey: on a component registered on its own), side by side.",
    )
    s.add_argument("reference", metavar="FILE", help="reference file (.npz), e.g. models/sim-v8/surface.npz")
    s.add_argument("--out", metavar="DIR", help="write <part type>.png pictures to DIR")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(func=lambda a: show(a.reference, a.out, a.json))
    return p
