"""The four models: shapes, gradients, pyramids really used, DiffNet's stability, documented sizes."""

import sys

import pytest
import torch

from segzoo.errors import SegzooError
from segzoo.models.blocks import count_parameters, ops_for
from segzoo.models.diffnet import DiffusionLayer
from segzoo.models.pyramid import image_pyramid
from segzoo.models.registry import MODELS, build_model

SMALL = {
    "unet3plus": {"base": 4, "levels": 4},
    "ms_unet3plus": {"base": 4, "levels": 4},
    "diffnet": {"channels": 4, "layers": 3, "hidden": 4},
    "ms_diffnet": {"channels": 4, "layers": 2, "hidden": 4, "scales": 3},
}


def small(name, in_channels=1, out_channels=3, **extra):
    torch.manual_seed(0)
    return build_model(name, in_channels, out_channels, **{**SMALL[name], **extra})


def test_registry_is_one_dict_of_the_models_the_zoo_network_and_nnunets():
    # nnunet is also what an imported nnU-Net model is built as (from its plans' architecture block)
    assert set(MODELS) == {"unet3plus", "ms_unet3plus", "diffnet", "ms_diffnet", "nnunet", "nnunet_resenc",
                           "plain_conv_unet"}
    with pytest.raises(SegzooError, match="unknown model"):
        build_model("unet", 1, 3)
    with pytest.raises(SegzooError, match="models.diffnet: .*widht"):
        build_model("diffnet", 1, 3, widht=4)


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("size", [(16, 16, 16), (32, 16, 24), (48, 32, 8)])
def test_output_shape_matches_input(name, size):
    model = small(name, in_channels=2).eval()
    if any(s % model.divisor for s in size):
        pytest.skip(f"{name} needs sides divisible by {model.divisor}")
    with torch.no_grad():
        out = model(torch.randn(1, 2, *size))
    assert out.shape == (1, 3, *size)


@pytest.mark.parametrize("name", ["diffnet"])
def test_diffnet_takes_any_size(name):
    with torch.no_grad():
        assert small(name).eval()(torch.randn(2, 1, 11, 7, 5)).shape == (2, 3, 11, 7, 5)


@pytest.mark.parametrize("name", ["unet3plus", "ms_unet3plus"])
def test_deep_supervision_gives_one_output_per_stage(name):
    model = small(name).train()
    outs = model(torch.randn(2, 1, 32, 32, 16))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32 // 2**k, 32 // 2**k, 16 // 2**k) for k in range(4)]


@pytest.mark.parametrize("name,extra", [(n, {}) for n in SMALL] + [("unet3plus", {"cgm": True})])
def test_every_parameter_receives_a_gradient(name, extra):
    model = small(name, **extra).train()
    x = torch.randn(2, 1, 32, 32, 16)
    outs = model(x)
    outs = outs if isinstance(outs, list) else [outs]
    loss = sum((o * torch.randn_like(o)).mean() for o in outs)
    if extra.get("cgm"):
        target = torch.zeros(2, 3, 32, 32, 16)
        target[0, 1, 5:9, 5:9, 2:5] = 1
        loss = loss + model.auxiliary_loss(target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("name,level", [("ms_unet3plus", 2), ("ms_unet3plus", 1), ("ms_diffnet", 2)])
def test_ms_variants_use_the_coarse_input_levels(name, level):
    model = small(name).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    levels = SMALL[name].get("levels", 4) - 1 if name == "ms_unet3plus" else SMALL[name]["scales"]
    images = image_pyramid(x, levels)
    with torch.no_grad():
        before = model(x, images)
        edited = list(images)
        edited[level] = edited[level] + 1.0
        after = model(x, edited)
        assert torch.equal(before, model(x))  # the pyramid passed in is the one it computes itself
    assert (after - before).abs().max() > 1e-4


def test_plain_unet3plus_ignores_a_pyramid():
    model = small("unet3plus").eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x, [x + 5 for x in image_pyramid(x, 3)]))


def test_diffusion_step_obeys_a_maximum_principle_over_many_layers():
    torch.manual_seed(0)
    ops = ops_for(3)
    layers = [DiffusionLayer(ops, 3, 1, 4) for _ in range(200)]
    for layer in layers:  # large random weights: conductivities anywhere in (0, 1), dt near its bound
        for p in layer.parameters():
            p.data.normal_(0, 3.0)
        layer.theta.data.fill_(10.0)
    image = torch.randn(1, 1, 12, 10, 8) * 100
    u = torch.randn(1, 3, 12, 10, 8) * 50
    lo, hi = u.amin(), u.amax()
    with torch.no_grad():
        for layer in layers:
            u = layer(u, image)
            assert torch.isfinite(u).all()
            assert u.amin() >= lo - 1e-3 and u.amax() <= hi + 1e-3
    assert u.std() < 50  # it diffused: the field is smoother than the start


def test_diffusion_conserves_the_mean():
    torch.manual_seed(1)
    layer = DiffusionLayer(ops_for(3), 2, 1, 4)
    u = torch.randn(1, 2, 9, 9, 9)
    with torch.no_grad():
        v = layer(u, torch.randn(1, 1, 9, 9, 9))
    assert torch.allclose(v.mean(dim=(2, 3, 4)), u.mean(dim=(2, 3, 4)), atol=1e-5)  # no-flux border


@pytest.mark.parametrize("name,options,count", [
    ("unet3plus", {"base": 8}, 1_289_175),
    ("unet3plus", {"base": 64}, 81_050_703),
    ("ms_unet3plus", {"base": 64}, 81_074_895),
    ("diffnet", {}, 45_065),
    ("ms_diffnet", {}, 74_004),
])
def test_documented_parameter_counts(name, options, count):
    model = build_model(name, 1, 3, **options)
    assert count_parameters(model) == count
    assert f"{count:,}" in sys.modules[type(model).__module__].__doc__  # the docstring states it
