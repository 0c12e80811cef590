"""The structure-shared generator: its neural graph places every parameter once, its denoiser is equivariant to the
network's channel permutations by construction, and on a toy where the best jump is known (a quadratic loss) it
learns the rule from four starts and applies it to a fifth it never saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segzoo.models.flat import flatten, layout_of
from segzoo.models.registry import ZOO_NETWORK, build_model
from segzoo.weightgen.graph.model import GraphDenoiser
from segzoo.weightgen.graph.neural_graph import neural_graph
from segzoo.weightgen.graph.sample import generate
from segzoo.weightgen.graph.signal import arm_budget, normalise_per_layer
from segzoo.weightgen.graph.train import Examples, GraphSettings, TrainedGraph, conditioning, fit
from segzoo.weightgen.zoo.layer_scale import LayerScale
from segzoo.weightgen.zoo.runs import ZooRun
from segzoo.weightgen.zoo.symmetry import Symmetry


def _network(features=(4, 8, 16), channels=2, regions=3):
    torch.manual_seed(0)
    model = build_model(ZOO_NETWORK, channels, regions, features=list(features))
    return model, layout_of(model)


def test_the_neural_graph_places_every_parameter_once_and_wires_the_skips():
    model, layout = _network()
    graph = neural_graph(model, layout)
    vector = flatten(model)
    assert torch.equal(graph.flat_of(graph.edge_values(vector), graph.node_values(vector)), vector)
    assert graph.kernel_sizes == [1, 8, 27] and graph.edges == 940  # 2 input channels
    # the first decoder stage's first convolution reads the transposed convolution's 8 channels and the 8-channel skip
    layer = graph.layers.index("decoder.stages.0.convs.0.conv.weight")
    sources = {graph.groups[int(graph.node_group[s])] for s in graph.src[graph.edge_layer == layer]}
    assert sources == {"decoder.transpconvs.0", "encoder.stages.1.0.convs.1"}


def _permuted(symmetry, x, perm):
    return torch.stack([torch.stack([symmetry.apply(x[b, c], perm) for c in range(x.shape[1])])
                        for b in range(x.shape[0])])


def test_permuting_the_start_permutes_the_output_exactly():
    model, layout = _network()
    graph = neural_graph(model, layout)
    symmetry = Symmetry(model, layout)
    denoiser = GraphDenoiser(graph, channels=3, regions=3, tasks=2, width=16, layers=2, diffusion_steps=50).double()
    with torch.no_grad():
        for p in denoiser.parameters():  # non-zero decoders, so the output is not trivially zero
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    x = torch.randn(2, 3, graph.parameters, dtype=torch.float64)
    perm = {u.name: torch.randperm(u.size, generator=torch.Generator().manual_seed(3)) for u in symmetry.units}
    args = (torch.tensor([3, 40]), torch.tensor([0, 1]), torch.rand(2, 3, dtype=torch.float64),
            torch.rand(2, 3, dtype=torch.float64))
    with torch.no_grad():
        out, out_permuted = denoiser(x, *args), denoiser(_permuted(symmetry, x, perm), *args)
    assert out.abs().mean() > 0.01
    assert torch.allclose(_permuted(symmetry, out[:, None], perm)[:, 0], out_permuted, rtol=0, atol=1e-12)
    assert not torch.allclose(out, out_permuted)  # the permutation does change the weights


def _quadratic_runs(model, layout, count: int, steps: int, seed: int):
    """Runs on a quadratic loss L_s(θ) = ½ Σ c_l ||θ_l − θ*_s,l||², each from its own start θ_s toward its own optimum
    θ*_s = θ_s + Δ_s (Δ_s drawn per start with a per-layer scale), along the straight path; "Dice" = progress."""
    sizes = [int(np.prod(s)) for _, s in layout]
    layer_scale = torch.repeat_interleave(torch.logspace(-2, -0.5, len(sizes)), torch.tensor(sizes))
    curvature = torch.repeat_interleave(torch.logspace(0, 2, len(sizes)), torch.tensor(sizes))
    runs, optimum = [], {}
    for k in range(count):
        generator = torch.Generator().manual_seed(seed + k)
        start = torch.randn(len(layer_scale), generator=generator) * 0.3
        delta = torch.randn(len(layer_scale), generator=generator) * layer_scale
        t = torch.linspace(0, 1, steps + 1)[:, None]
        params = start + t * delta
        dice = np.repeat(t.numpy(), 3, axis=1).astype(np.float32)
        runs.append(ZooRun(f"s{k}/sc", "train", "sc", 0.01, 0, f"s{k}", params, dice, list(range(steps + 1)), 0.0))
        optimum[f"s{k}"] = start + delta
    return runs, optimum, curvature


def test_a_quadratic_jump_learned_on_four_starts_transfers_to_a_fifth():
    model, layout = _network(features=(2, 4), channels=1, regions=3)
    graph = neural_graph(model, layout)
    runs, optimum, curvature = _quadratic_runs(model, layout, 5, 8, seed=11)
    train, unseen = runs[:4], runs[4]

    def gradient(run, rows):  # ∇L at the rows: c (θ − θ*)
        return curvature * (run.params[rows] - optimum[run.start])

    scale = LayerScale.fit(layout, [r.params - r.start_params for r in train])
    origin = LayerScale.fit(layout, [torch.stack([r.start_params for r in train])])
    settings = GraphSettings("grad", width=32, layers=1, steps=400, batch_size=16, lr=3e-3, ema=0.9,
                             diffusion_steps=100, signal_patches=1, ddim_steps=10)
    examples = Examples(train, "grad", gradient, scale, origin, layout, ["sc"])
    model_fit, losses = fit(graph, examples, settings, regions=3, tasks=1, seed=0, device="cpu")
    assert np.mean(losses[-50:]) < 0.7 * np.mean(losses[:50])
    trained = TrainedGraph(model_fit, settings, scale, origin, ["sc"], ["sc", "canal", "lesion"], {})
    start = unseen.start_params[None]
    cond = conditioning("grad", start, gradient(unseen, [0]), origin, scale, layout)
    made = generate(trained, start, cond, ["sc"], start_metrics=torch.zeros(1, 3), target_metrics=torch.ones(1, 3),
                    ddim_steps=10, generator=torch.Generator().manual_seed(0))[0]
    wanted = optimum[unseen.start] - unseen.start_params
    error = float(((made - optimum[unseen.start]) / scale.per_parameter).norm() / (wanted / scale.per_parameter).norm())
    print(f"relative error of the jump to the unseen start's optimum: {error:.3f}")
    assert error < 0.5, error  # no change at all scores 1.0


def test_arms_count_their_gradient_evaluations():
    assert arm_budget("grad") == 1 and arm_budget("adam10") == 10
    with pytest.raises(ValueError, match="unknown signal arm"):
        arm_budget("adam")
    layout = [["a", [2, 2]], ["b", [3]]]
    normalised = normalise_per_layer(torch.tensor([[2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]]), layout)
    assert torch.equal(normalised, torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]))
