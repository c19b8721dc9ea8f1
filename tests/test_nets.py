"""Shapes and gradients of the App. F networks (Table 3), and the gated layers' definition."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.test_models import _one_thread  # noqa: F401  (autouse: tiny nets on one thread)
from vhp_lightning.nets.conv import ConvDecoder, ConvEncoder, GatedConvDecoder, GatedConvEncoder
from vhp_lightning.nets.gated import GatedConv2d, GatedDense, GatedGaussianMLP
from vhp_lightning.nets.mlp import MLP, GaussianMLP

B = 3


def _assert_all_grads(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in module.parameters())


def test_gated_dense_is_linear_times_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedDense(5, 7)
    x = torch.randn(B, 5)
    y = layer(x)
    assert y.shape == (B, 7)
    torch.testing.assert_close(y, layer.h(x) * torch.sigmoid(layer.g(x)))


def test_gated_conv_is_conv_times_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedConv2d(2, 4, kernel_size=3, stride=2, padding=1)
    x = torch.randn(B, 2, 9, 9)
    y = layer(x)
    assert y.shape == (B, 4, 5, 5)
    h = torch.nn.functional.conv2d(x, layer.h.weight, layer.h.bias, stride=2, padding=1)
    g = torch.nn.functional.conv2d(x, layer.g.weight, layer.g.bias, stride=2, padding=1)
    torch.testing.assert_close(y, h * torch.sigmoid(g))
    y.sum().backward()
    _assert_all_grads(layer)


def test_gated_gaussian_mlp_shapes_bounds_and_out_dim():
    net = GatedGaussianMLP(32, 8, hidden=(256, 256))
    assert net.out_dim == 8
    mean, logvar = net(100.0 * torch.randn(B, 32))
    assert mean.shape == logvar.shape == (B, 8)
    assert (logvar >= -12.0).all() and (logvar <= 6.0).all()
    (mean.sum() + logvar.sum()).backward()
    _assert_all_grads(net)
    # the heads are GaussianMLP's: a zero raw output means unit variance
    last = net.head.body.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    mean, logvar = net(torch.randn(B, 32))
    torch.testing.assert_close(logvar, torch.zeros(B, 8), atol=1e-6, rtol=0.0)
    torch.testing.assert_close(mean, torch.zeros(B, 8))


def _check_encoder(enc: torch.nn.Module, x: torch.Tensor, latent: int) -> None:
    mean, logvar = enc(x)
    assert mean.shape == logvar.shape == (B, latent)
    assert enc.out_dim == latent
    (mean.pow(2).sum() + logvar.sum()).backward()
    _assert_all_grads(enc)


def _check_decoder(dec: torch.nn.Module, latent: int, shape: tuple[int, ...]) -> None:
    z = torch.randn(B, latent, requires_grad=True)
    out = dec(z)
    assert out.shape == (B, *shape)
    out.pow(2).sum().backward()
    _assert_all_grads(dec)
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_gated_conv_encoder_mnist():
    enc = GatedConvEncoder(data_shape=(1, 28, 28), out_dim=32)
    assert enc.feature_dim == 6 * 7 * 7  # 28 -> 28 -> 14 -> 14 -> 7 -> 7
    _check_encoder(enc, torch.rand(B, 1, 28, 28), 32)
    # flattened input is accepted too (VampPrior pseudo-inputs, flat datasets)
    mean, _ = enc(torch.rand(B, 784))
    assert mean.shape == (B, 32)


def test_gated_conv_decoder_mnist():
    dec = GatedConvDecoder(in_dim=32, data_shape=(1, 28, 28))
    assert len(dec.body) == 4
    _check_decoder(dec, 32, (1, 28, 28))


def test_conv_encoder_decoder_64():
    enc = ConvEncoder(data_shape=(1, 64, 64), out_dim=32)
    assert enc.feature_dim == 96 * 4 * 4
    _check_encoder(enc, torch.rand(B, 1, 64, 64), 32)
    dec = ConvDecoder(in_dim=32, data_shape=(1, 64, 64))
    _check_decoder(dec, 32, (1, 64, 64))
    convs = [m for m in dec.body if isinstance(m, torch.nn.ConvTranspose2d)]
    enc_convs = [m for m in enc.body if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(enc_convs) == 8
    for t, c in zip(convs, reversed(enc_convs), strict=True):  # the decoder mirrors the encoder
        assert (t.in_channels, t.out_channels) == (c.out_channels, c.in_channels)
        assert (t.kernel_size, t.stride) == (c.kernel_size, c.stride)


def test_conv_nets_other_image_sizes():
    _check_encoder(GatedConvEncoder((1, 16, 16), 4), torch.rand(B, 1, 16, 16), 4)
    _check_encoder(ConvEncoder((1, 16, 16), 4), torch.rand(B, 1, 16, 16), 4)
    _check_decoder(ConvDecoder(4, (1, 16, 16)), 4, (1, 16, 16))


def test_conv_nets_reject_bad_shapes():
    with pytest.raises(ValueError, match="divisible by 16"):
        ConvEncoder((1, 28, 28))
    with pytest.raises(ValueError, match="channels, height, width"):
        GatedConvEncoder((784,))
    with pytest.raises(ValueError, match="data_shape"):
        GatedConvEncoder((1, 28, 28))(torch.rand(B, 1, 16, 16))


def test_he_init_keeps_the_input_signal_through_a_deep_relu_mlp() -> None:
    """App. F's FC 256 x 4 ReLU nets: PyTorch's default init shrinks the signal ~sqrt(6)-fold per
    layer, so the output barely depends on the input; He init keeps its scale (~1)."""
    x = torch.randn(4096, 2)
    spread = {}
    for init in ("torch", "he"):
        torch.manual_seed(0)
        spread[init] = MLP(2, 2, [256] * 4, init=init)(x).std(0).mean().item()
    assert spread["torch"] < 0.05
    assert 0.3 < spread["he"] < 3.0
    torch.manual_seed(0)
    net = GaussianMLP(2, 2, [256] * 4, init="he")
    assert all(float(m.bias.abs().max()) == 0.0 for m in net.modules() if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="Unknown init 'xavier'. Choose one of: torch, he"):
        MLP(2, 2, init="xavier")
