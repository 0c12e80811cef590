"""Architecture figures drawn from the model object itself.

* :func:`architecture_diagram`: the wiring diagram. One forward pass is traced with ``torch.fx``, one level
  deep in the module tree (every member of a ``ModuleList`` is a box of its own; the image pyramid and
  ``upsample`` stay single calls), its shapes filled in by running it on random input. Then, for a legible
  picture: parameter-free single-input steps (pooling, upsampling, indexing) and the per-branch convolutions
  that feed a concatenation become the label of the wire they sit on; a concatenation is drawn as the box
  that consumes it (with the number of inputs it joins); a run of members of one ``ModuleList`` called one
  after the other on the same inputs (DiffNet's diffusion layers) is one box with its repeat count. Boxes
  whose outputs have the same spatial size share a row and each top-level attribute has a column (U-Net 3+
  draws as encoders | decoder stages | heads, every skip visible). Graphviz's ``dot`` lays it out; written
  as SVG, PNG and PDF. (torchview draws the same trace, but names boxes by class only, cannot show distinct
  layer instances as one repeated block, and gives U-Net 3+ some 70 unlabelled boxes: hence our own graph.)
* :func:`parameter_figure`: one bar per component with its parameter count and output shape(s).
"""

from __future__ import annotations

import inspect
import operator
import shutil
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.fx as fx  # noqa: E402
from torch import nn  # noqa: E402
from torch.fx.passes.shape_prop import ShapeProp  # noqa: E402

from segzoo.errors import SegzooError  # noqa: E402
from segzoo.models.blocks import count_parameters, upsample  # noqa: E402
from segzoo.models.nnunet import NnUNetNetwork  # noqa: E402
from segzoo.models.pyramid import image_pyramid  # noqa: E402
from segzoo.models.registry import build_model  # noqa: E402
from segzoo.report.names import model_name  # noqa: E402

FORMATS = ("svg", "png", "pdf")
DOT_MISSING = ("the architecture diagrams need Graphviz's `dot` program, which is not on PATH: install it "
               "(Debian/Ubuntu: apt-get install graphviz; conda: conda install -c conda-forge graphviz)")
TRACE_SIZE = (64, 64, 32)  # input size the figures trace with (rounded to the model's divisor)

# Box fill per top-level attribute (in order of first call), then grey.
PALETTE = ["#cfe2f3", "#d9ead3", "#fce5cd", "#ead1dc", "#fff2cc", "#d0e0e3", "#f4cccc", "#d9d2e9"]
DOWN, UP, LEVEL = "#1f5fa8", "#b3261e", "#444444"  # wire colours: to a coarser, a finer, the same grid


def require_dot() -> None:
    """Raise :class:`SegzooError` (one line) when Graphviz's ``dot`` is not on PATH."""
    if shutil.which("dot") is None:
        raise SegzooError(DOT_MISSING)


def fit_size(model: nn.Module, size: tuple[int, ...]) -> tuple[int, ...]:
    """``size`` rounded down to the model's divisor, at least twice it (the coarsest grid then has more than one
    voxel, which instance norm needs in training mode)."""
    d = getattr(model, "divisor", 1)
    return tuple(max(2 * d, (s // d) * d) for s in size)


# --- the wiring, as data ----------------------------------------------------------------------------------

@dataclass
class Box:
    """One box of the diagram: a module call, a function call or the input/output."""

    id: str
    title: str  # the module's path in the model (``encoders[2]``), a function's name, "input"/"output"
    kind: str  # the module's class, or "function", "input", "output"
    shapes: list[tuple[int, ...]]  # output shape(s) without the batch axis
    parameters: int = 0  # all of the box's (a run: all its layers)
    group: str = ""  # the top-level attribute (colour, column)
    repeat: int = 1  # > 1: a run of this many layers, drawn once
    joins: int = 0  # > 0: the call's input is the concatenation of this many wires
    via: str = ""  # the modules every joined wire passes through (``branches[1][·] ConvNormAct``)
    outputs: list[int] = field(default_factory=list)  # which of the model's outputs this box gives
    note: str = ""  # what a function or a repeated module does (first sentence of its docstring)
    inside: str = ""  # a repeated module's parts


@dataclass
class Wire:
    source: str
    target: str
    steps: list[str] = field(default_factory=list)  # on the way: ÷k max-pooling, a branch's conv, ×k upsampling
    shape: tuple[int, ...] = ()  # the tensor as it arrives
    grid: str = ""  # "coarser" or "finer" when the wire changes the spatial grid on the way


class _Tracer(fx.Tracer):
    """Stops one level below the model: every submodule is a leaf, except containers (ModuleList/Dict),
    whose members are leaves, and the submodules named in ``through``, traced one level further. The image
    pyramid and upsampling are recorded as single calls."""

    def __init__(self, through: tuple[str, ...] = ()):
        super().__init__(autowrap_functions=(image_pyramid, upsample))
        self.through = set(through)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return not isinstance(m, (nn.ModuleList, nn.ModuleDict)) and qualname not in self.through


def _through(model: nn.Module) -> tuple[str, ...]:
    """Submodules drawn by their parts: nnU-Net's encoder and decoder (one level down are its stages, the
    transposed convolutions and the segmentation heads, so the skips show)."""
    return ("encoder", "decoder") if isinstance(model, NnUNetNetwork) else ()


def _path(target: str) -> str:
    """``branches.3.0`` → ``branches[3][0]``."""
    head, *rest = target.split(".")
    return head + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)


def _shapes(node: fx.Node) -> list[tuple[int, ...]]:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return []
    if hasattr(meta, "shape"):  # TensorMetadata (itself a tuple)
        return [tuple(meta.shape[1:])]
    return [tuple(m.shape[1:]) for m in meta if hasattr(m, "shape")]


def _summary(obj) -> str:
    """The first sentence of a docstring (up to a semicolon), without reST markup."""
    doc = type(obj).__doc__ if isinstance(obj, nn.Module) else inspect.getdoc(obj)
    return (doc or "").strip().split("\n")[0].split("; ")[0].replace("``", "").rstrip(".")


def _inside(m: nn.Module) -> str:
    """A module's parts, one level down: ``conductivity: ConvNormAct → Conv3d · theta``."""
    parts = [f"{name}: {' → '.join(type(c).__name__ for c in child.children())}" if isinstance(child, nn.Sequential)
             else f"{name}: {type(child).__name__}" for name, child in m.named_children()]
    parts += [name for name, _ in m.named_parameters(recurse=False)]
    return " · ".join(parts)


def _member(n: fx.Node) -> tuple[str, int] | None:
    """(list, index) for a call of a ModuleList member (``stages.2``, 1 for ``stages.2.1``)."""
    if n.op != "call_module":
        return None
    parent, _, last = n.target.rpartition(".")
    return (parent, int(last)) if parent and last.isdigit() else None


def wiring(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Box], list[Wire]]:
    """The boxes and wires of ``model``'s diagram, from one traced forward pass in training mode (so
    deep-supervision heads are wired too) on random input of ``input_shape`` [B, C, *spatial]."""
    extra = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in extra if p.default is not inspect.Parameter.empty}
    model.train()
    try:
        graph = _Tracer(_through(model)).trace(model, concrete_args=concrete)
        with torch.no_grad():
            ShapeProp(fx.GraphModule(model, graph)).propagate(
                torch.randn(input_shape, generator=torch.Generator().manual_seed(0)))
    except Exception as e:  # a model fx cannot follow (data-dependent control flow)
        raise SegzooError(f"{type(model).__name__}: cannot trace its forward pass for the architecture diagram "
                          f"({type(e).__name__}: {e})") from None

    # Inputs fixed by concrete_args (``images=None``) and the checks fx adds for them are not part of the picture.
    dropped: set[fx.Node] = set([n for n in graph.nodes if n.op == "placeholder"][1:])
    for n in graph.nodes:
        if any(a in dropped for a in n.all_input_nodes):
            dropped.add(n)
    nodes = [n for n in graph.nodes if n not in dropped]
    inputs = {n: [a for a in n.all_input_nodes if a not in dropped] for n in nodes}
    users = {n: [u for u in n.users if u not in dropped] for n in nodes}

    def module(n: fx.Node) -> nn.Module:
        return model.get_submodule(n.target)

    def parameters(n: fx.Node) -> int:
        return count_parameters(module(n)) if n.op == "call_module" else 0

    def is_cat(n: fx.Node) -> bool:
        return n.op == "call_function" and n.target in (torch.cat, torch.concat)

    def single(n: fx.Node) -> bool:  # one tensor in, one tensor out to one consumer: could sit on a wire
        return (n.op in ("call_module", "call_function", "call_method") and not is_cat(n)
                and len(inputs[n]) == 1 and len(users[n]) == 1 and hasattr(n.meta.get("tensor_meta"), "shape"))

    def feeds_cat(n: fx.Node) -> bool:
        """Whether ``n`` is the last module with parameters on a single-file way into a concatenation (a branch's
        convolution; what comes before it, such as nnU-Net's bottleneck before its transposed convolution, stays
        a box)."""
        n = users[n][0]
        while single(n):
            if parameters(n):
                return False
            n = users[n][0]
        return is_cat(n)

    folded = {n for n in nodes if single(n) and (parameters(n) == 0 or feeds_cat(n))}
    # A concatenation whose only consumer is a module that takes nothing else is drawn as that module's box.
    absorbed = {n for n in nodes if is_cat(n) and len(users[n]) == 1 and users[n][0].op == "call_module"
                and inputs[users[n][0]] == [n]}

    def step(n: fx.Node) -> str:
        if n.op == "call_module":
            m = module(n)
            if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                k = m.kernel_size[0] if isinstance(m.kernel_size, tuple) else m.kernel_size
                return f"÷{k}" if "Max" in type(m).__name__ else f"avg ÷{k}"
            return _path(n.target)
        if n.target is upsample:
            return f"×{n.args[1]}"
        if n.target is operator.getitem:
            return f"[{n.args[1]}]"
        return getattr(n.target, "__name__", str(n.target))

    def resolve(n: fx.Node) -> tuple[fx.Node, list[fx.Node]]:
        """The drawn node a value comes from, and the folded nodes on the way (in order)."""
        chain = []
        while n in folded:
            chain.insert(0, n)
            n = inputs[n][0]
        return n, chain

    def sources(n: fx.Node) -> list[fx.Node]:  # the values a drawn node's wires carry (through its concatenation)
        return [s for a in inputs[n] for s in (inputs[a] if a in absorbed else [a])]

    def grid(chain: list[fx.Node]) -> str:
        change = ""
        for x in chain:
            before, after = _shapes(inputs[x][0]), _shapes(x)
            if len(before) == 1 and len(after) == 1 and before[0][1:] != after[0][1:]:
                change = "coarser" if prod(after[0][1:]) < prod(before[0][1:]) else "finer"
        return change

    def same_wire(a: fx.Node, b: fx.Node) -> bool:
        (sa, ca), (sb, cb) = resolve(a), resolve(b)
        return sa is sb and [step(x) for x in ca] == [step(x) for x in cb]

    drawn = [n for n in nodes if n not in folded and n not in absorbed]

    # Runs: consecutive members of one ModuleList of one class, each fed by the one before (and nothing else
    # uses that one) and otherwise by the same values: drawn as one box.
    first_of: dict[fx.Node, fx.Node] = {}  # later member -> first member
    members: dict[fx.Node, list[fx.Node]] = {}
    for n in drawn:
        here, src = _member(n), sources(n)
        prev = src[0] if src else None
        there = _member(prev) if prev is not None and prev in drawn else None
        if here and there and there[0] == here[0] and there[1] + 1 == here[1] and users[prev] == [n] \
                and type(module(prev)) is type(module(n)) and len(src) == len(sources(prev)) \
                and all(same_wire(a, b) for a, b in zip(src[1:], sources(prev)[1:])):
            first = first_of.get(prev, prev)
            first_of[n] = first
            members.setdefault(first, [first]).append(n)

    def box_id(n: fx.Node) -> str:
        return first_of.get(n, n).name

    boxes: dict[str, Box] = {}
    wires: list[Wire] = []
    output = next(n for n in drawn if n.op == "output")
    split_output = len(inputs[output]) > 1  # several outputs (deep supervision): each marked on its box
    for n in drawn:
        if n in first_of or (n is output and split_output):
            continue
        run = members.get(n, [n])
        if n.op in ("placeholder", "output"):
            box = Box(n.name, "input" if n.op == "placeholder" else "output", n.op.replace("placeholder", "input"),
                      _shapes(n) if n.op == "placeholder" else [s for a in inputs[n] for s in _shapes(a)])
        elif n.op == "call_module":
            title = _path(n.target)
            if len(run) > 1:
                parent, index = _member(n)
                title = f"{_path(parent)}[{index}…{index + len(run) - 1}]"
            box = Box(n.name, title, type(module(n)).__name__, _shapes(run[-1]), sum(map(parameters, run)),
                      n.target.split(".")[0], len(run))
            if len(run) > 1:  # the one box stands for several: say what each is
                box.note = _summary(type(module(n)))
                box.inside = _inside(module(n))
        else:
            box = Box(n.name, step(n), "function", _shapes(n), note=_summary(n.target))
        boxes[n.name] = box
        values = inputs[n] if n.op == "output" else sources(n)
        box.joins = len(values) if inputs[n] and inputs[n][0] in absorbed else 0
        incoming = []
        for value in values:
            origin, chain = resolve(value)
            incoming.append((origin, chain, Wire(box_id(origin), n.name, [step(x) for x in chain],
                                                 (_shapes(value) or [()])[0], grid(chain))))
        # A concatenation fed through members of one module list (U-Net 3+'s branches): say so once, in the box.
        via = [[x for x in chain if parameters(x)] for _, chain, _ in incoming]
        if box.joins and all(len(v) == 1 and _member(v[0]) for v in via) \
                and len({(_member(v[0])[0], type(module(v[0]))) for v in via}) == 1:
            box.via = f"{_path(_member(via[0][0])[0])}[·] {type(module(via[0][0])).__name__}"
            for (_, chain, wire), v in zip(incoming, via):
                wire.steps = [step(x) for x in chain if x is not v[0]]
        wires += [wire for _, _, wire in incoming]
        if len(run) > 1:  # the run feeds itself
            wires.append(Wire(n.name, n.name, [f"× {len(run)}"], (_shapes(n) or [()])[0]))
    if split_output:
        for i, value in enumerate(inputs[output]):
            origin, _ = resolve(value)
            boxes[box_id(origin)].outputs.append(i)
    return list(boxes.values()), wires


# --- the picture ------------------------------------------------------------------------------------------

def _fmt_shape(shape: tuple[int, ...]) -> str:
    if not shape:
        return "?"
    return f"{shape[0]}, {'×'.join(map(str, shape[1:]))}" if len(shape) > 1 else str(shape[0])


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _label(b: Box, arriving: list[tuple[int, ...]]) -> str:
    small = '<FONT POINT-SIZE="9">{}</FONT>'
    lines = [f"<B>{_html(b.title)}</B>"]
    kind = b.kind if b.kind not in ("input", "output", "function") else ""
    if b.repeat > 1:
        kind += f" × {b.repeat}"
    if kind:
        lines.append(_html(kind))
    if b.note:
        lines.append(small.format(_html(b.note)))
    if b.inside:
        lines.append(small.format(_html(f"each: {b.inside}")))
    if b.joins:
        same = len(set(arriving)) == 1
        lines.append(small.format(_html(f"concat {b.joins} × [{_fmt_shape(arriving[0])}]" if same
                                        else f"concat of {b.joins}")))
    if b.via:
        lines.append(small.format(_html(f"each through {b.via}")))
    lines += [_html(f"[{_fmt_shape(s)}]") for s in b.shapes[:6]] + (["…"] if len(b.shapes) > 6 else [])
    if b.parameters:
        each = f" = {b.repeat} × {_fmt_count(b.parameters // b.repeat)}" if b.repeat > 1 else ""
        lines.append(small.format(f"{_fmt_count(b.parameters)} params{each}"))
    if b.outputs:
        lines.append(small.format("<B>" + _html(", ".join(f"→ output[{i}]" for i in b.outputs)) + "</B>"))
    cells = "".join(f"<TR><TD>{line}</TD></TR>" for line in lines)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{cells}</TABLE>>'


def diagram(boxes: list[Box], wires: list[Wire], title: str):
    """A ``graphviz.Digraph`` of the wiring. When the boxes' grids differ: one row per grid (top-down in
    order of first use), one column per top-level attribute (encoders | fuse | heads); otherwise one
    left-to-right chain."""
    import graphviz

    spatial = {b.id: b.shapes[0][1:] for b in boxes if len(b.shapes) == 1 and b.kind not in ("input", "output")}
    rows = list(dict.fromkeys(spatial.values()))
    order = {size: i for i, size in enumerate(rows)}
    layered = len(rows) > 1
    g = graphviz.Digraph("architecture", graph_attr={
        "rankdir": "TB" if layered else "LR", "newrank": "true", "nodesep": "0.3", "ranksep": "0.5",
        "fontname": "DejaVu Sans", "fontsize": "12", "labelloc": "t", "label": title, "bgcolor": "white",
        "pad": "0.15"},
        node_attr={"shape": "box", "style": "rounded,filled", "margin": "0.06,0.03", "fontname": "DejaVu Sans",
                   "fontsize": "11"},
        edge_attr={"fontname": "DejaVu Sans", "fontsize": "9", "arrowsize": "0.6", "penwidth": "1.1"})
    colours: dict[str, str] = {}
    for b in boxes:
        if b.group:
            colours.setdefault(b.group, PALETTE[len(colours) % len(PALETTE)])
    for b in boxes:
        fill = colours.get(b.group, "#fffbe6" if b.kind in ("input", "output") else "#eeeeee")
        g.node(b.id, _label(b, [w.shape for w in wires if w.target == b.id]), fillcolor=fill,
               penwidth="2.2" if b.repeat > 1 else "1")
    by_id = {b.id: b for b in boxes}
    if layered:
        columns = list(colours)
        wired = {(w.source, w.target) for w in wires}
        for size in rows:
            row = [b for b in boxes if spatial.get(b.id) == size]
            row.sort(key=lambda b: columns.index(b.group) if b.group in columns else -1)
            with g.subgraph() as s:
                s.attr(rank="same")
                for b in row:
                    s.node(b.id)
            for left, right in zip(row, row[1:]):  # left to right in column order (a second edge would arc)
                if (left.id, right.id) not in wired:
                    g.edge(left.id, right.id, style="invis", weight="0")
        for group in columns:  # each column straight down
            column = sorted((b for b in boxes if b.group == group and b.id in spatial),
                            key=lambda b: order[spatial[b.id]])
            for upper, lower in zip(column, column[1:]):
                g.edge(upper.id, lower.id, style="invis", weight="20")
    joined = {b.id for b in boxes if b.joins}
    for w in wires:
        colour = {"coarser": DOWN, "finer": UP}.get(w.grid, LEVEL)
        source, target = by_id[w.source], by_id[w.target]
        # The SVG keeps each wire's real direction (drawn backwards or not) in its tooltip and class.
        attrs = {"color": colour, "fontcolor": colour, "class": f"wire {w.grid or 'same'}",
                 "tooltip": _html(f"{source.title} → {target.title}")}
        label = " → ".join(w.steps)
        if w.source == w.target:
            attrs.update(label=_html(label), penwidth="2", fontsize="11")
        else:
            arriving = {x.shape for x in wires if x.target == w.target}
            shape = f"[{_fmt_shape(w.shape)}]"
            if (w.target in joined and len(arriving) == 1) or target.kind == "output" \
                    or (not w.steps and source.shapes == [w.shape]):
                shape = ""  # said in the box it leaves or enters
            text = _html("\n".join(x for x in (label, shape) if x))
            flat = layered and spatial.get(w.source, 0) == spatial.get(w.target, 1)
            # Within a row, an edge label would need a row of its own (and trips dot 2.43's router): xlabel.
            attrs["xlabel" if flat else "label"] = text
            if flat:  # leave and enter on the sides: a wire passing between the two would make it an arc
                attrs.update(tailport="s" if source.repeat > 1 else "e", headport="w")  # a run's loop: on the right
        if layered and w.source in spatial and w.target in spatial \
                and order[spatial[w.source]] > order[spatial[w.target]]:
            # Against the row order: laid out as a wire from the finer row down to this one, drawn backwards,
            # so that it agrees with the rows and Graphviz routes and labels it like the others.
            g.edge(w.target, w.source, dir="back", **attrs)
            continue
        g.edge(w.source, w.target, **attrs)
    return g


def architecture_diagram(name: str, options: dict, in_channels: int, out_channels: int, stem: Path,
                         size: tuple[int, int, int] = TRACE_SIZE) -> dict[str, Path]:
    """Write ``stem``.svg/.png/.pdf: the wiring diagram of model ``name`` built with ``options``; returns the
    paths by format. Raises :class:`SegzooError` when Graphviz's ``dot`` is missing."""
    require_dot()
    import graphviz

    model = build_model(name, in_channels, out_channels, **options)
    size = fit_size(model, size)
    boxes, wires = wiring(model, (1, in_channels, *size))
    legend = []
    if any(w.grid == "coarser" for w in wires):
        legend.append("blue wire: to a coarser grid (÷k: max-pooling by k)")
    if any(w.grid == "finer" for w in wires):
        legend.append("red wire: to a finer grid (×k: nearest upsampling by k)")
    if any(w.steps and w.steps[0].startswith("[") for w in wires):
        legend.append("[k]: item k of a list")
    if any(b.repeat > 1 for b in boxes):
        legend.append("loop × K: K layers in a row, each fed by the one before")
    title = (f"{model_name(name)} ({name}): {count_parameters(model):,} parameters; traced on input [{in_channels}, "
             f"{'×'.join(map(str, size))}] in training mode; shapes are [channels, spatial]"
             + ("\n" + "; ".join(legend) if legend else ""))
    g = diagram(boxes, wires, title)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt in FORMATS:
        if fmt == "png":
            g.graph_attr["dpi"] = "96"
        try:
            data = g.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise SegzooError(DOT_MISSING) from None
        finally:
            g.graph_attr.pop("dpi", None)
        path = stem.with_suffix(f".{fmt}")
        path.write_bytes(data)
        out[fmt] = path
    return out


# --- parameters per component -----------------------------------------------------------------------------

def trace(model: torch.nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """Run one forward pass on random input in training mode (so deep-supervision heads run too); return
    the top-level components in first-call order with the output shapes of their calls (a ModuleList's
    members are components of their own)."""
    calls: dict[str, dict] = {}
    hooks = []

    def watch(name: str, module: torch.nn.Module):
        def hook(_module, _inputs, output):
            entry = calls.setdefault(name, {"name": name, "type": type(module).__name__,
                                            "parameters": count_parameters(module), "shapes": []})
            if isinstance(output, torch.Tensor):
                entry["shapes"].append(tuple(output.shape[1:]))
        hooks.append(module.register_forward_hook(hook))

    def walk(name: str, module: torch.nn.Module):
        if isinstance(module, torch.nn.ModuleList):  # never called itself: its members are
            for index, member in enumerate(module):
                walk(f"{name}[{index}]", member)
        else:
            watch(name, module)

    for name, child in model.named_children():
        walk(name, child)
    model.train()
    with torch.no_grad():
        model(torch.randn(input_shape, generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    return list(calls.values())


def parameter_figure(name: str, options: dict, in_channels: int, out_channels: int, png: Path,
                     size: tuple[int, int, int] = TRACE_SIZE) -> Path:
    """One horizontal bar per component (parameters, log scale) labelled with its output shape(s)."""
    model = build_model(name, in_channels, out_channels, **options)
    size = fit_size(model, size)
    components = trace(model, (1, in_channels, *size))
    fig, ax = plt.subplots(figsize=(10, 0.22 * len(components) + 1.4))
    y = list(range(len(components)))[::-1]
    ax.barh(y, [max(c["parameters"], 1) for c in components], color="tab:blue", alpha=0.6)
    labels = []
    for c in components:
        shapes = c["shapes"]
        shape = "×".join(map(str, shapes[0])) if shapes else "-"
        more = f" ({len(shapes)} calls)" if len(shapes) > 1 else ""
        labels.append(f"{c['name']} · {c['type']} → [{shape}]{more}")
    ax.set_yticks(y, labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("parameters per component (log scale)")
    ax.set_title(f"{model_name(name)} ({name}): {count_parameters(model):,} parameters; input [{in_channels}, "
                 f"{'×'.join(map(str, size))}]; "
                 f"components in call order with output [channels, spatial]", fontsize=9)
    fig.tight_layout()
    fig.subplots_adjust(left=0.3)  # room for the component labels
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    fig.savefig(png.with_suffix(".pdf"), metadata={"CreationDate": None})  # for the paper, as io.save_figure does
    plt.close(fig)
    return png
