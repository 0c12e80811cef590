"""An architecture figure drawn from the model object itself: its components, in the order a forward
pass calls them, with each call's output shape and each component's parameter count."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from segzoo.models.blocks import count_parameters  # noqa: E402
from segzoo.models.registry import build_model  # noqa: E402


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


def architecture_figure(name: str, options: dict, in_channels: int, out_channels: int, png: Path,
                        size: tuple[int, int, int] = (64, 64, 32)) -> Path:
    """One horizontal bar per component (parameters, log scale) labelled with its output shape(s)."""
    model = build_model(name, in_channels, out_channels, **options)
    d = model.divisor
    size = tuple(max(d, (s // d) * d) for s in size)
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
    ax.set_title(f"{name}: {count_parameters(model):,} parameters; input [{in_channels}, {'×'.join(map(str, size))}]; "
                 f"components in call order with output [channels, spatial]", fontsize=9)
    fig.tight_layout()
    fig.subplots_adjust(left=0.3)  # room for the component labels
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
