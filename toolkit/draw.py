"""Draw an architecture description as a graph, from the JSON alone (no TensorFlow).

:func:`draw_architecture` reads the dict that ``space.replay(config)`` returns
(``conv_net``, ``mlp``, or any description with a ``"layers"`` list) and draws
the model that :mod:`toolkit.evaluators.builders` would build from it, block by
block. With the graphviz ``dot`` program on the ``PATH`` it is an SVG graph;
without it (a fresh login node often has none) it is a readable text drawing,
and a log message says why. Either way the result is a ``str`` that Jupyter
displays as a picture or as preformatted text.

Examples
--------
>>> arch = {"type": "mlp", "hidden": [{"units": 64, "activation": "relu"}], "dropout": 0.1,
...         "batch_norm": False, "learning_rate": 1e-3, "optimizer": "adam", "num_classes": 10}
>>> drawing = draw_architecture(arch, renderer="text")
>>> drawing.format
'text'
>>> print(drawing)
mlp: adam, learning rate 0.001, dropout 0.1, 10 classes
┌────────────────────┐
│ input              │
└────────────────────┘
           │
           ▼
┌────────────────────┐
│ Flatten            │
└────────────────────┘
           │
           ▼
┌────────────────────┐
│ hidden0: Dense 64  │
│ relu · Dropout 0.1 │
└────────────────────┘
           │
           ▼
┌────────────────────┐
│ output: Dense 10   │
│ softmax            │
└────────────────────┘
"""

from __future__ import annotations

import html
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArchitectureDrawing", "architecture_layers", "draw_architecture"]

logger = logging.getLogger(__name__)

RENDERERS = ("auto", "svg", "text")
_FILL = {
    "io": "#eeeeee",
    "conv": "#cfe2f3",
    "dense": "#d9ead3",
    "reshape": "#fff2cc",
    "layer": "#ead1dc",
}


@dataclass
class Block:
    """One box of the drawing: a name, a few lines of detail, and a kind (for its colour)."""

    name: str
    lines: list[str] = field(default_factory=list)
    kind: str = "layer"

    @property
    def text(self) -> list[str]:
        return [self.name, *self.lines]


class ArchitectureDrawing(str):
    """A drawing: SVG markup (``format == "svg"``) or text (``format == "text"``).

    It is a ``str``, so it can be written to a file or printed; in Jupyter it
    displays as the graph (``_repr_svg_``) or as preformatted text
    (``_repr_html_``).

    Attributes
    ----------
    format
        ``"svg"`` or ``"text"``.
    reason
        Why text was drawn instead of SVG (``None`` for SVG, or when text was asked for).
    source
        The graphviz DOT source of the graph (``None`` when the graphviz package is absent).
    """

    format: str
    reason: str | None
    source: str | None

    def __new__(cls, content: str, format: str, reason: str | None = None, source: str | None = None):
        obj = super().__new__(cls, content)
        obj.format = format
        obj.reason = reason
        obj.source = source
        return obj

    def _repr_svg_(self) -> str | None:
        return str(self) if self.format == "svg" else None

    def _repr_html_(self) -> str | None:
        if self.format == "svg":
            return None
        return f"<pre style='line-height:1.15'>{html.escape(str(self))}</pre>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self) if self.format == "text" else f"<ArchitectureDrawing: SVG, {len(self)} characters>")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the drawing (``.svg`` or ``.txt``) and return its path."""
        path = Path(path)
        path.write_text(str(self), encoding="utf-8")
        return path


# --------------------------------------------------------------------------- description -> blocks


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _conv_net(arch: Mapping[str, Any]) -> list[Block]:
    rate = float(arch.get("dropout") or 0.0)
    blocks = [Block("input", ["images (H×W×C)"], "io")]
    for i, conv in enumerate(arch.get("conv") or []):
        k = conv.get("kernel_size", 3)
        steps = ["BatchNorm"] if conv.get("batch_norm") else []
        steps.append("ReLU")
        pool = conv.get("pool", "max")
        if pool not in (None, "none"):
            steps.append(f"{'Max' if pool == 'max' else 'Avg' if pool == 'avg' else pool}Pool 2×2")
        blocks.append(
            Block(f"conv{i}: Conv2D {conv.get('filters', 32)}, {k}×{k}", [" · ".join(steps)], "conv")
        )
    blocks.append(Block("Flatten", [f"Dropout {_fmt(rate)}"] if rate > 0 else [], "reshape"))
    for i, dense in enumerate(arch.get("dense") or []):
        lines = ["ReLU" + (f" · Dropout {_fmt(rate)}" if rate > 0 else "")]
        blocks.append(Block(f"dense{i}: Dense {dense.get('units')}", lines, "dense"))
    blocks.append(Block(f"output: Dense {arch.get('num_classes', 10)}", ["softmax"], "io"))
    return blocks


def _mlp(arch: Mapping[str, Any]) -> list[Block]:
    rate = float(arch.get("dropout") or 0.0)
    bn = bool(arch.get("batch_norm"))
    blocks = [Block("input", [], "io"), Block("Flatten", [], "reshape")]
    for i, hidden in enumerate(arch.get("hidden") or []):
        steps = (["BatchNorm"] if bn else []) + [str(hidden.get("activation", "relu"))]
        if rate > 0:
            steps.append(f"Dropout {_fmt(rate)}")
        blocks.append(Block(f"hidden{i}: Dense {hidden.get('units')}", [" · ".join(steps)], "dense"))
    blocks.append(Block(f"output: Dense {arch.get('num_classes', 10)}", ["softmax"], "io"))
    return blocks


def _generic_layer(i: int, layer: Any) -> Block:
    if isinstance(layer, Mapping):
        kind_name = layer.get("type") or layer.get("class") or layer.get("name") or f"layer{i}"
        details = [
            f"{k}={_fmt(v)}"
            for k, v in layer.items()
            if k not in ("type", "class", "name") and not isinstance(v, (Mapping, list))
        ]
        lines = [", ".join(details[j : j + 3]) for j in range(0, len(details), 3)]
        low = str(kind_name).lower()
        kind = "conv" if "conv" in low else "dense" if "dense" in low or "linear" in low else "layer"
        return Block(str(kind_name), lines, kind)
    return Block(str(layer), [], "layer")


def architecture_layers(arch: Mapping[str, Any]) -> tuple[str, list[Block]]:
    """A title and the blocks of an architecture description, as :func:`draw_architecture` draws them.

    Parameters
    ----------
    arch
        A ``conv_net`` or ``mlp`` description (``space.replay(config)``), or any
        dict with a ``"layers"`` list whose items are dicts (``{"type": ...,
        ...}``) or strings.

    Returns
    -------
    title, blocks
        A one-line summary (type, optimizer, learning rate, dropout, classes) and
        the boxes from input to output.

    Raises
    ------
    ValueError
        For a description with none of ``conv``/``dense``, ``hidden`` or ``layers``.

    Examples
    --------
    >>> title, blocks = architecture_layers({"type": "conv_net", "conv": [{"filters": 16}], "dense": []})
    >>> [b.name for b in blocks]
    ['input', 'conv0: Conv2D 16, 3×3', 'Flatten', 'output: Dense 10']
    """
    if not isinstance(arch, Mapping):
        raise ValueError(
            f"draw_architecture takes an architecture description (a dict such as space.replay(config)); "
            f"got {type(arch).__name__} {arch!r:.120}."
        )
    kind = arch.get("type")
    if kind == "conv_net" or ("conv" in arch and isinstance(arch.get("conv"), list)):
        blocks = _conv_net(arch)
    elif kind == "mlp" or isinstance(arch.get("hidden"), list):
        blocks = _mlp(arch)
    elif isinstance(arch.get("layers"), Sequence) and not isinstance(arch.get("layers"), str):
        blocks = [_generic_layer(i, layer) for i, layer in enumerate(arch["layers"])]
        if not blocks:
            raise ValueError("the architecture's 'layers' list is empty; there is nothing to draw.")
    else:
        raise ValueError(
            f"cannot draw architecture type {kind!r} with keys {sorted(arch)}: draw_architecture knows "
            "'conv_net' (conv/dense lists), 'mlp' (a hidden list) and any description with a 'layers' list, "
            "e.g. {'type': 'mine', 'layers': [{'type': 'Dense', 'units': 64}, 'softmax']}."
        )
    facts = [str(kind or "architecture")]
    extra = []
    if arch.get("optimizer"):
        extra.append(str(arch["optimizer"]))
    if arch.get("learning_rate") is not None:
        extra.append(f"learning rate {_fmt(arch['learning_rate'])}")
    if arch.get("dropout") is not None:
        extra.append(f"dropout {_fmt(arch['dropout'])}")
    if arch.get("num_classes") is not None:
        extra.append(f"{arch['num_classes']} classes")
    title = facts[0] + (": " + ", ".join(extra) if extra else "")
    return title, blocks


# --------------------------------------------------------------------------- renderers


def _text(title: str, blocks: list[Block]) -> str:
    width = max(len(line) for b in blocks for line in b.text) + 2
    mid = " " * ((width + 2) // 2)
    out = [title]
    for i, b in enumerate(blocks):
        if i:
            out += [f"{mid}│", f"{mid}▼"]
        out.append("┌" + "─" * width + "┐")
        out += [f"│ {line:<{width - 1}}│" for line in b.text]
        out.append("└" + "─" * width + "┘")
    return "\n".join(out)


def _dot_source(title: str, blocks: list[Block]) -> Any:
    import graphviz

    g = graphviz.Digraph(
        "architecture",
        graph_attr={
            "label": title,
            "labelloc": "t",
            "fontsize": "12",
            "fontname": "Helvetica",
            "ranksep": "0.25",
        },
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"arrowsize": "0.6"},
    )
    for i, b in enumerate(blocks):
        rows = [f"<b>{html.escape(b.name)}</b>"] + [html.escape(line) for line in b.lines if line]
        g.node(f"n{i}", label="<" + "<br/>".join(rows) + ">", fillcolor=_FILL.get(b.kind, _FILL["layer"]))
        if i:
            g.edge(f"n{i - 1}", f"n{i}")
    return g


def draw_architecture(arch: Mapping[str, Any], renderer: str = "auto") -> ArchitectureDrawing:
    """Draw an architecture description: SVG through graphviz, or text when ``dot`` is missing.

    Parameters
    ----------
    arch
        The description (``space.replay(config)``; in a notebook
        ``toolkit.retrain.trial_architecture(exp, trial)``). Nothing is built
        and TensorFlow is not imported.
    renderer
        ``"auto"``: SVG when the graphviz package and its ``dot`` program are
        available, else text (and a warning is logged that says why); ``"svg"``: SVG
        or a :class:`RuntimeError` that says what to install; ``"text"``:
        always text.

    Returns
    -------
    ArchitectureDrawing
        A ``str`` of SVG markup or text, with ``.format`` (``"svg"`` or
        ``"text"``); Jupyter displays it as a graph or preformatted text.

    Raises
    ------
    ValueError
        For a description it cannot read, or an unknown ``renderer``.
    RuntimeError
        With ``renderer="svg"`` when graphviz or ``dot`` is missing.

    Examples
    --------
    >>> from toolkit import SearchSpace
    >>> from toolkit.spaces import conv_net
    >>> space = SearchSpace(conv_net)
    >>> drawing = draw_architecture(space.replay(space.sample(0)))
    >>> drawing.format in ("svg", "text")
    True
    >>> draw_architecture({"type": "conv_net", "conv": [], "dense": []}, renderer="text").splitlines()[2]
    '│ input            │'
    """
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {list(RENDERERS)}; got {renderer!r}.")
    title, blocks = architecture_layers(arch)
    text = _text(title, blocks)
    if renderer == "text":
        return ArchitectureDrawing(text, "text", None, _safe_source(title, blocks))
    reason = None
    try:
        import graphviz
    except ImportError:
        reason = "the graphviz Python package is not installed (pip install graphviz)"
    else:
        if shutil.which("dot") is None:
            reason = (
                "the graphviz 'dot' program is not on the PATH (install it: conda install -c conda-forge "
                "graphviz, apt-get install graphviz, or `module load graphviz` on a cluster)"
            )
    if reason is None:
        graph = _dot_source(title, blocks)
        try:
            svg = graph.pipe(format="svg", encoding="utf-8")
        except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError) as exc:
            reason = f"graphviz 'dot' failed: {exc}"
        else:
            return ArchitectureDrawing(svg, "svg", None, graph.source)
    if renderer == "svg":
        raise RuntimeError(f"cannot draw SVG: {reason}. Use renderer='auto' or 'text' to get a text drawing.")
    logger.warning("drawing the architecture as text: %s", reason)
    return ArchitectureDrawing(text, "text", reason, _safe_source(title, blocks))


def _safe_source(title: str, blocks: list[Block]) -> str | None:
    try:
        return _dot_source(title, blocks).source
    except ImportError:
        return None
