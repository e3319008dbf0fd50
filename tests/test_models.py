"""Tests for pruneexp.models: shapes, parameter counts, errors, init, traceability."""

from __future__ import annotations

import math

import pytest
import torch
import torch_pruning as tp
from torch import nn

from pruneexp.errors import PruneexpError
from pruneexp.models import MODELS, create_model, torchvision_model_names
from pruneexp.models.tv import RepeatChannels

MNIST, CIFAR, DIGITS, MNIST1D = (1, 28, 28), (3, 32, 32), (1, 8, 8), (40,)

CASES = (
    [(n, s, 10) for n in ("mlp", "lenet_300_100", "residual_mlp") for s in (MNIST, DIGITS, MNIST1D)]
    + [(n, s, 10) for n in ("lenet5", "lenet5_caffe", "conv2", "conv4", "conv6") for s in (MNIST, CIFAR)]
    + [(n, CIFAR, k) for n in ("vgg11", "vgg16", "resnet20", "resnet56") for k in (10, 100)]
    + [("resnet20", MNIST, 10), ("vit", MNIST, 10), ("vit", (1, 28, 28), 100)]
)


def weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# language models take token ids and give (batch, T, vocab): tested in test_posttrain.py and test_hf.py
LANGUAGE_MODELS = {"gpt", "hf"}


def test_every_registered_model_is_covered():
    assert {c[0] for c in CASES} | LANGUAGE_MODELS == set(MODELS.names())


@pytest.mark.parametrize("name,shape,classes", CASES)
def test_forward_shape_and_classifier_is_last_linear(name, shape, classes):
    torch.manual_seed(0)
    model = create_model(name, shape, classes)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()
    assert linears(model)[-1].out_features == classes


# nn.MultiheadAttention applies its out_proj functionally (no module call), so the transformer is
# left out here; its FLOPs are checked per weight in test_extensions.py instead.
@pytest.mark.parametrize("name,shape,classes", [c for c in CASES if c[0] != "vit"])
def test_modules_are_used_once_in_module_order(name, shape, classes):
    model = create_model(name, shape, classes)
    calls: list[nn.Module] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in leaves]
    model(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    # each leaf module runs exactly once, and Conv/Linear run in module-definition order
    assert len(calls) == len(set(map(id, calls))) == len(leaves)
    layers = (nn.Conv2d, nn.Linear)
    assert [m for m in calls if isinstance(m, layers)] == [m for m in model.modules() if isinstance(m, layers)]
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_lenet_300_100_exact_param_count():
    model = create_model("lenet_300_100", MNIST, 10)
    assert sum(p.numel() for p in model.parameters()) == 266_610
    assert sum(p.numel() for p in create_model("mlp", MNIST, 10).parameters()) == 266_610


def test_mlp_widths():
    model = create_model("mlp", MNIST, 10, widths=[50, 40, 30])
    assert [m.out_features for m in linears(model)] == [50, 40, 30, 10]
    assert create_model("mlp", MNIST1D, 10, widths=[])(torch.randn(2, 40)).shape == (2, 10)
    with pytest.raises(PruneexpError):
        create_model("mlp", MNIST, 10, widths=[0])


def test_residual_mlp_adds_skips_around_later_hidden_layers():
    """Greydanus 2020: h1 = relu(W1 x); h2 = h1 + relu(W2 h1); y = W3 h2 (40-500-500-10: 276 010 parameters)."""
    model = create_model("residual_mlp", MNIST1D, 10, widths=[500, 500])
    assert sum(p.numel() for p in model.parameters()) == 40 * 500 + 500 + 500 * 500 + 500 + 500 * 10 + 10
    x = torch.randn(4, 40)
    w1, w2, w3 = linears(model)
    h1 = torch.relu(w1(x))
    assert torch.allclose(model(x), w3(h1 + torch.relu(w2(h1))), atol=1e-6)
    with torch.no_grad():  # the skip: with W2 zeroed the network is W3 relu(W1 x)
        w2.weight.zero_()
        w2.bias.zero_()
    assert torch.allclose(model(x), w3(h1), atol=1e-6)
    with pytest.raises(PruneexpError, match="equal positive hidden widths"):
        create_model("residual_mlp", MNIST1D, 10, widths=[500, 400])


def test_lth_conv_weight_counts():
    # Frankle & Carbin 2019, Table 1: Conv-2 4.3M, Conv-4 2.4M weights on CIFAR-10.
    assert weight_count(create_model("conv2", CIFAR, 10)) == pytest.approx(4.3e6, rel=0.02)
    assert weight_count(create_model("conv4", CIFAR, 10)) == pytest.approx(2.4e6, rel=0.02)
    # Table 1 says 1.7M for Conv-6, but the architecture of its Fig. 2 (64,64,P,128,128,P,256,256,P,
    # fc256,fc256,fc10) has 1,144,512 conv + 1,116,672 fc = 2,261,184 weights; we follow Fig. 2.
    assert weight_count(create_model("conv6", CIFAR, 10)) == 2_261_184


def test_resnet_param_counts():
    n20 = sum(p.numel() for p in create_model("resnet20", CIFAR, 10).parameters())
    n56 = sum(p.numel() for p in create_model("resnet56", CIFAR, 10).parameters())
    assert 260_000 <= n20 <= 280_000
    assert 840_000 <= n56 <= 870_000


def test_first_layer_is_conv_for_conv_models():
    for name in ("lenet5", "conv2", "vgg11", "resnet20"):
        model = create_model(name, CIFAR, 10)
        first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        assert isinstance(first, nn.Conv2d) and first.in_channels == 3


@pytest.mark.parametrize(
    "name,shape",
    [("vgg11", DIGITS), ("vgg16", MNIST), ("conv6", (3, 4, 4)), ("lenet5", DIGITS), ("conv2", MNIST1D), ("resnet20", MNIST1D)],
)
def test_unsupported_input_shape(name, shape):
    with pytest.raises(PruneexpError, match="needs an image input"):
        create_model(name, shape, 10)


def test_unknown_names_and_bad_arguments():
    with pytest.raises(PruneexpError, match="Did you mean 'resnet20'"):
        create_model("resnet21", CIFAR, 10)
    with pytest.raises(PruneexpError, match="widths"):
        create_model("conv4", CIFAR, 10, widths=[10])
    with pytest.raises(PruneexpError, match="widths"):
        create_model("lenet_300_100", MNIST, 10, widths=[10])
    with pytest.raises(PruneexpError, match="Unknown init"):
        create_model("mlp", MNIST, 10, init="orthogonal")
    with pytest.raises(PruneexpError, match="source"):
        create_model("mlp", MNIST, 10, source="timm")
    with pytest.raises(PruneexpError):
        create_model("mlp", (0, 28), 10)
    with pytest.raises(PruneexpError):
        create_model("mlp", MNIST, 0)


def test_glorot_normal_init():
    torch.manual_seed(0)
    model = create_model("mlp", (1000,), 10, widths=[1000], init="glorot_normal")
    big = linears(model)[0]
    expected = math.sqrt(2.0 / (1000 + 1000))
    assert big.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert all((m.bias == 0).all() for m in linears(model))


@pytest.mark.parametrize("init", ["kaiming_normal", "glorot_uniform", "normal"])
def test_other_inits_zero_biases_and_touch_convs(init):
    torch.manual_seed(0)
    model = create_model("conv2", MNIST, 10, init=init)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all((m.bias == 0).all() for m in layers)
    conv = layers[1]  # 64 -> 64, 3x3: fan_in 576
    if init == "kaiming_normal":
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)
    elif init == "normal":  # Lasagne's init.Normal(): N(0, 0.01²) whatever the fan
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    else:
        assert conv.weight.abs().max().item() <= math.sqrt(6 / (576 + 576)) + 1e-6


def test_init_per_layer_kind():
    """`conv:<init>,linear:<init>`: each kind drawn from its own scheme (Molchanov et al. 2017's LeNet-5:
    Lasagne's GlorotUniform convolutions, N(0, 0.01²) dense layers); a kind left out keeps PyTorch's."""
    torch.manual_seed(0)
    model = create_model("lenet5_caffe", MNIST, 10, init="conv:glorot_uniform,linear:normal")
    conv2, fc1 = model.features[2], model.classifier[0]
    bound = math.sqrt(6 / (20 * 25 + 50 * 25))  # Glorot uniform: fan_in + fan_out of a 20 -> 50, 5x5 conv
    assert conv2.weight.abs().max().item() <= bound + 1e-6
    assert conv2.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert fc1.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert all((m.bias == 0).all() for m in (conv2, fc1))
    torch.manual_seed(0)
    only_conv = create_model("lenet5_caffe", MNIST, 10, init="conv:normal")
    assert only_conv.features[0].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert (only_conv.classifier[0].bias != 0).any()  # linear left at PyTorch's own init
    torch.manual_seed(0)
    same = create_model("lenet5_caffe", MNIST, 10, init="conv:normal,linear:normal")
    torch.manual_seed(0)
    whole = create_model("lenet5_caffe", MNIST, 10, init="normal")
    assert all(torch.equal(p, q) for p, q in zip(same.parameters(), whole.parameters()))  # one scheme = the same draws
    for bad in ("conv:orthogonal", "bn:normal", "conv:normal,linear"):
        with pytest.raises(PruneexpError, match="<kind>:<init>"):
            create_model("lenet5_caffe", MNIST, 10, init=bad)


def test_lenet5_caffe_conv_relu():
    """conv_relu=True: a ReLU after each conv, before its pooling (Molchanov et al. 2017's LeNet-5), the
    same parameters; the default is Caffe's network without."""
    torch.manual_seed(0)
    plain = create_model("lenet5_caffe", MNIST, 10)
    relu = create_model("lenet5_caffe", MNIST, 10, conv_relu=True)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in relu.parameters()) == 431_080
    assert not any(isinstance(m, nn.ReLU) for m in plain.features)
    relu.load_state_dict({k.replace("features.2.", "features.3."): v for k, v in plain.state_dict().items()})
    x = torch.randn(4, *MNIST)
    c1, c2 = plain.features[0], plain.features[2]
    h = nn.functional.max_pool2d(c2(nn.functional.max_pool2d(c1(x).relu(), 2)).relu(), 2)
    torch.testing.assert_close(relu(x), plain.classifier(h.flatten(1)))


def test_default_init_keeps_pytorch_biases_and_same_seed_same_model():
    torch.manual_seed(1)
    a = create_model("lenet5", MNIST, 10)
    torch.manual_seed(1)
    b = create_model("lenet5", MNIST, 10)
    assert any((m.bias != 0).any() for m in linears(a))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", ["resnet20", "vgg11"])
def test_torch_pruning_dependency_graph(name):
    model = create_model(name, CIFAR, 10).eval()
    example = torch.randn(1, *CIFAR)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    if name == "vgg11":  # a plain chain: conv -> BN -> next conv, no residual coupling
        conv, bn = model.features[0], model.features[1]
        nxt = next(m for m in list(model.features)[2:] if isinstance(m, nn.Conv2d))
        before = (conv.out_channels, nxt.in_channels)
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1, 2])
        assert dg.check_pruning_group(group)
        group.prune()
        assert (conv.out_channels, bn.num_features, nxt.in_channels) == (before[0] - 3, before[0] - 3, before[1] - 3)
        assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    if name == "resnet20":
        conv = model.conv1
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1])
        assert dg.check_pruning_group(group)
        group.prune()
        assert conv.out_channels == 14
        assert model.blocks[0].conv1.in_channels == 14  # the residual chain was pruned with it
        assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_torchvision_resnet18_on_grayscale():
    torch.manual_seed(0)
    model = create_model("resnet18", MNIST, 10, source="torchvision")
    assert isinstance(model[0], RepeatChannels)
    assert model(torch.randn(2, *MNIST)).shape == (2, 10)
    assert linears(model)[-1].out_features == 10


def test_torchvision_errors_and_names():
    names = torchvision_model_names()
    assert "resnet18" in names and names == sorted(names)
    with pytest.raises(PruneexpError, match="list_models"):
        create_model("resnet1800", CIFAR, 10, source="torchvision")
    with pytest.raises(PruneexpError, match="image input"):
        create_model("resnet18", MNIST1D, 10, source="torchvision")
    with pytest.raises(PruneexpError, match="takes no model arguments here \\(got widths\\)"):
        create_model("resnet18", CIFAR, 10, source="torchvision", widths=[3])


@pytest.mark.parametrize("name", ["lenet5", "lenet5_caffe"])
def test_channels_last_max_pool_gives_the_same_bits_as_nn_max_pool(name):
    """pruneexp's MaxPool2d (channels-last on the CPU, ~10x faster) against nn.MaxPool2d in the same
    network: outputs and every gradient equal to the last bit, ties included (a dead filter makes
    every window of its channel tie)."""
    import copy

    from pruneexp.models.pooling import MaxPool2d

    torch.manual_seed(0)
    fast = create_model(name, (1, 28, 28), 10)
    with torch.no_grad():
        fast.features[0].weight[3].zero_()  # a dead filter: a constant channel, all windows tied
    plain = copy.deepcopy(fast)
    swapped = 0
    for parent in plain.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, MaxPool2d):
                setattr(parent, child_name, nn.MaxPool2d(child.kernel_size))
                swapped += 1
    assert swapped == 2
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    outs = []
    for model in (fast, plain):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        outs.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(outs[0][1][n], outs[1][1][n]) for n in outs[0][1])
