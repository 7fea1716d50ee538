"""lineguard: real-time visual inspection for moving assembly lines.

The code lives in sub-packages: ``lineguard.runtime`` (recipes, compiler, executor, CLI),
``lineguard.nodes`` (the node types), ``lineguard.sim`` (simulated line and virtual PLC),
``lineguard.graphs`` (shipped recipes) and ``lineguard.schemas`` (JSON Schemas).
"""

__version__ = "0.1.0"
