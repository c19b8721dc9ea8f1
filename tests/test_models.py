"""The models of ``vhp_lightning.models`` against the protocol, the bounds and closed forms.

Tiny MLP nets (data dim 12, latent 2) keep everything on the CPU in seconds. The closed-form checks
use linear-Gaussian models, whose log p(x) is exact: PPCA for the one-layer estimator and a
two-layer linear-Gaussian chain for the joint (z1, z2) estimator of the VHP and the IWAE (L=2).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vhp_lightning.models import IWAE, IWAE2, VAE, VHP, VampPrior
from vhp_lightning.nets.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vhp_lightning.nets.mlp import MLP, GaussianMLP

D, LATENT, B = 12, 2, 16
MODELS = ["vae", "iwae", "iwae_l2", "vampprior", "vhp"]
HAS_PRIOR_PARAMS = {"vae": False, "iwae": False, "iwae_l2": True, "vampprior": True, "vhp": True}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets run fastest on one thread (and do not fight parallel test runs for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(name: str) -> nn.Module:
    enc = GaussianMLP(D, LATENT, hidden=(32,))
    dec = MLP(LATENT, D, hidden=(32,))
    lik = BernoulliLikelihood()
    if name == "vae":
        return VAE(enc, dec, lik)
    if name == "iwae":
        return IWAE(enc, dec, lik, n_importance=4)
    if name == "vampprior":
        return VampPrior(enc, dec, lik, data_shape=(D,), n_pseudo=7)
    prior_nets = (GaussianMLP(LATENT, LATENT, (32,)), GaussianMLP(LATENT, LATENT, (32,)))
    if name == "iwae_l2":
        return IWAE2(enc, dec, lik, *prior_nets, n_importance=4)
    return VHP(enc, dec, lik, *prior_nets, n_importance=4)


def tiny_batch() -> torch.Tensor:
    """Binary data around two prototypes, so there is something to learn."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, D, generator=g) > 0.5).float()
    flips = (torch.rand(B, D, generator=g) < 0.1).float()
    return (protos[torch.arange(B) % 2] - flips).abs()


@pytest.mark.parametrize("name", MODELS)
def test_loss_dict_is_finite_scalars(name):
    torch.manual_seed(0)
    model, x = make_model(name), tiny_batch()
    for beta in (1e-3, 1.0):
        parts = model.loss(x, beta=beta)
        assert {"loss", "recon", "kl", "constraint"} <= set(parts)
        for key, value in parts.items():
            assert value.dim() == 0 and torch.isfinite(value), key
        assert 0.0 <= parts["constraint"] <= 1.0
        assert not parts["constraint"].requires_grad
    # ELBO-type models: loss = nll + beta * kl exactly
    if name in ("vae", "vampprior", "vhp"):
        torch.manual_seed(1)
        p = model.loss(x, beta=0.3)
        torch.testing.assert_close(p["loss"], p["recon"] + 0.3 * p["kl"])


@pytest.mark.parametrize("name", MODELS)
def test_loss_decreases_with_adam(name):
    torch.manual_seed(0)
    model, x = make_model(name), tiny_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = model.loss(x, beta=1.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses[::10]


@pytest.mark.parametrize("name", MODELS)
def test_parameter_groups_and_gradients(name):
    torch.manual_seed(0)
    model = make_model(name)
    vae_params, prior_params = list(model.vae_parameters()), list(model.prior_parameters())
    ids_vae, ids_prior = {id(p) for p in vae_params}, {id(p) for p in prior_params}
    assert not ids_vae & ids_prior, "a parameter is in both groups"
    assert ids_vae | ids_prior == {id(p) for p in model.parameters()}, "a parameter is in no group"
    assert bool(prior_params) == HAS_PRIOR_PARAMS[name]
    model.loss(tiny_batch(), beta=0.5)["loss"].backward()
    for group in (vae_params, prior_params):
        for p in group:
            assert p.grad is not None and torch.isfinite(p.grad).all()
        assert not group or any(p.grad.abs().sum() > 0 for p in group)


@pytest.mark.parametrize("name", MODELS)
def test_sampling_shapes(name):
    torch.manual_seed(0)
    model = make_model(name)
    assert model.sample_prior(5).shape == (5, LATENT)
    assert model.sample(5).shape == (5, D)
    mean, logvar = model.encode(tiny_batch())
    assert mean.shape == logvar.shape == (B, LATENT)
    assert model.decode(mean).shape == (B, D)


@pytest.mark.parametrize("name", MODELS)
def test_log_likelihood_is_above_the_training_bound(name):
    """The S-sample estimate of log p(x) lies above the ELBO / K-sample IW bound on average."""
    torch.manual_seed(0)
    model, x = make_model(name), tiny_batch()
    ll = model.log_likelihood(x, n_samples=1000, chunk_size=300)  # uneven last chunk on purpose
    assert ll.shape == (B,) and torch.isfinite(ll).all() and not ll.requires_grad
    with torch.no_grad():
        bound = -torch.stack([model.loss(x, beta=1.0)["loss"] for _ in range(50)]).mean()
    assert ll.mean() > bound
    assert ll.mean() < 0.0  # a log-probability of binary data


# --- closed forms: linear-Gaussian models ---------------------------------------------------
class Affine(nn.Module):
    """A diagonal Gaussian with mean ``M @ u + c`` and a fixed log-variance (test helper)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("logvar", logvar)
        self.out_dim = weight.shape[0]

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = u.flatten(start_dim=1) @ self.weight.T + self.bias
        return mean, self.logvar.expand_as(mean)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _orthonormal_columns(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q


def ppca(n: int = 32, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5):
    """PPCA p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I) with orthogonal columns of W, so that
    the exact posterior N((W^T W + sigma^2 I)^-1 W^T (x - b), sigma^2 (W^T W + sigma^2 I)^-1) is
    diagonal. Returns the decoder, the likelihood, the exact encoder, data and exact log p(x).
    """
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([2.0, 0.7], dtype=torch.float64)[:z_dim]
    w = _orthonormal_columns(x_dim, z_dim, g) * scales
    b = torch.randn(x_dim, generator=g, dtype=torch.float64)
    post_var = sigma**2 / (scales**2 + sigma**2)
    encoder = Affine(
        (post_var / sigma**2)[:, None] * w.T, -(post_var / sigma**2) * (w.T @ b), post_var.log()
    )
    marginal = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(x_dim))
    x = marginal.sample((n,))
    likelihood = GaussianLikelihood(sigma=sigma).double()
    return _linear(w, b), likelihood, encoder, x, marginal.log_prob(x)


def test_ppca_exact_posterior_gives_exact_log_likelihood():
    torch.manual_seed(0)
    decoder, likelihood, encoder, x, exact = ppca()
    model = VAE(encoder, decoder, likelihood)
    ll = model.log_likelihood(x, n_samples=1000, chunk_size=250)
    assert ll.dtype == torch.float64
    torch.testing.assert_close(ll, exact, atol=1e-3, rtol=0.0)
    # and the ELBO is tight too: KL(q || p(z|x)) = 0
    torch.testing.assert_close(-model.loss(x)["loss"], exact.mean(), atol=0.3, rtol=0.0)


def test_ppca_wrong_encoder_converges_from_below():
    torch.manual_seed(0)
    decoder, likelihood, encoder, x, exact = ppca(n=256)
    wrong = Affine(encoder.weight * 0.9, encoder.bias + 0.2, encoder.logvar + 0.5)
    model = VAE(wrong, decoder, likelihood)
    sizes = (1, 10, 100, 5000)
    gaps = [(model.log_likelihood(x, n_samples=s) - exact).mean().item() for s in sizes]
    # Jensen: E log of a mean of S weights is below log p(x), and rises with S towards it; by
    # S = 100 the bias is within the Monte Carlo noise of 256 examples
    assert gaps[0] < gaps[1] < 0.0 and abs(gaps[2]) < abs(gaps[1]), gaps
    assert abs(gaps[3]) < 0.005, gaps


def two_layer_linear_gaussian(n: int = 32, x_dim: int = 5, z1_dim: int = 3, z2_dim: int = 2):
    """z2 ~ N(0, I), z1|z2 ~ N(A z2 + a, t^2 I), x|z1 ~ N(W z1 + b, s^2 I), with A = [diag; 0]
    and orthogonal columns of W, so p(z1|x) and p(z2|z1) are diagonal Gaussians. Returns the nets
    (encoder = p(z1|x), decoder, likelihood, prior_encoder = p(z2|z1), prior_decoder =
    p(z1|z2)), data and the exact log p(x) = log N(x; W a + b, W (A A^T + t^2 I) W^T + s^2 I).
    """
    g = torch.Generator().manual_seed(1)
    f64 = {"dtype": torch.float64}
    s, t = 0.4, 0.6
    alpha = torch.tensor([1.5, 0.8], **f64)[:z2_dim]
    a_mat = torch.zeros(z1_dim, z2_dim, **f64)
    a_mat[range(z2_dim), range(z2_dim)] = alpha
    a_vec = torch.randn(z1_dim, generator=g, **f64)
    w_scales = torch.tensor([1.8, 1.0, 0.5], **f64)[:z1_dim]
    w = _orthonormal_columns(x_dim, z1_dim, g) * w_scales
    b = torch.randn(x_dim, generator=g, **f64)
    prior1_var = torch.diagonal(a_mat @ a_mat.T) + t**2  # p(z1) = N(a, diag(prior1_var))
    post1_var = 1.0 / (1.0 / prior1_var + w_scales**2 / s**2)
    # mean of p(z1|x) = post1_var * (W^T (x - b) / s^2 + a / prior1_var)
    encoder = Affine(
        post1_var[:, None] * w.T / s**2,
        post1_var * (a_vec / prior1_var - w.T @ b / s**2),
        post1_var.log(),
    )
    post2_var = 1.0 / (1.0 + alpha**2 / t**2)
    # mean of p(z2|z1) = post2_var * A^T (z1 - a) / t^2
    prior_encoder = Affine(
        post2_var[:, None] * a_mat.T / t**2, -post2_var * (a_mat.T @ a_vec) / t**2, post2_var.log()
    )
    prior_decoder = Affine(a_mat, a_vec, torch.full((z1_dim,), 2 * math.log(t), **f64))
    cov_x = w @ (a_mat @ a_mat.T + t**2 * torch.eye(z1_dim, **f64)) @ w.T
    marginal = torch.distributions.MultivariateNormal(
        w @ a_vec + b, cov_x + s**2 * torch.eye(x_dim, **f64)
    )
    x = marginal.sample((n,))
    nets = (
        encoder,
        _linear(w, b),
        GaussianLikelihood(sigma=s).double(),
        prior_encoder,
        prior_decoder,
    )
    return nets, x, marginal.log_prob(x)


@pytest.mark.parametrize("cls", [VHP, IWAE2])
def test_two_layer_exact_posteriors_give_exact_log_likelihood(cls):
    torch.manual_seed(0)
    nets, x, exact = two_layer_linear_gaussian()
    model = cls(*nets)
    ll = model.log_likelihood(x, n_samples=1000, chunk_size=400)
    torch.testing.assert_close(ll, exact, atol=1e-3, rtol=0.0)


@pytest.mark.parametrize("cls", [VHP, IWAE2])
def test_two_layer_wrong_posterior_converges_from_below(cls):
    torch.manual_seed(0)
    (enc, dec, lik, prior_enc, prior_dec), x, exact = two_layer_linear_gaussian(n=256)
    wrong_enc = Affine(enc.weight * 0.9, enc.bias + 0.2, enc.logvar + 0.5)
    wrong_prior_enc = Affine(prior_enc.weight * 0.8, prior_enc.bias, prior_enc.logvar + 0.5)
    model = cls(wrong_enc, dec, lik, wrong_prior_enc, prior_dec)
    sizes = (1, 10, 100, 5000)
    gaps = [(model.log_likelihood(x, n_samples=s) - exact).mean().item() for s in sizes]
    assert gaps[0] < gaps[1] < 0.0 and abs(gaps[2]) < abs(gaps[1]), gaps
    assert abs(gaps[3]) < 0.005, gaps


# --- the importance-sampled estimator, evaluated fast ----------------------------------------
def test_vhp_and_iwae2_share_the_joint_estimator():
    """Both estimate log p(x) over joint (z, zeta) samples (``TwoLayerModel.log_weights``): with
    the same nets and seed they give the same numbers."""
    torch.manual_seed(0)
    nets = make_model("vhp")
    iwae2 = IWAE2(
        nets.encoder, nets.decoder, nets.likelihood, nets.prior_encoder, nets.prior_decoder
    )
    x = tiny_batch()
    torch.manual_seed(1)
    ours = nets.log_likelihood(x, n_samples=50, chunk_size=20)
    torch.manual_seed(1)
    torch.testing.assert_close(ours, iwae2.log_likelihood(x, n_samples=50, chunk_size=20))


class _ConvDecoder(nn.Module):
    """``z: (N, 2) -> (N, 1, 2, 6)`` logits through a 1x1 convolution; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.conv, self.calls = nn.Linear(LATENT, 4 * D), nn.Conv2d(4, 1, 1), []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(z))
        return self.conv(self.fc(z).view(-1, 4, 2, D // 2))


def test_conv_nets_without_gradient_run_in_cache_sized_calls(monkeypatch):
    """Without gradients a convolutional decoder on the CPU sees CPU_CONV_EVAL_BATCH samples a
    call (the NLL's speed, bench/RESULTS.md) and gives the same numbers; training runs one call."""
    from vhp_lightning.models import base

    torch.manual_seed(0)
    model = VHP(GaussianMLP(D, LATENT, (32,)), _ConvDecoder(), BernoulliLikelihood(),
                GaussianMLP(LATENT, LATENT, (32,)), GaussianMLP(LATENT, LATENT, (32,)))  # fmt: skip
    x = tiny_batch()
    estimates = {}
    for batch in (base.CPU_CONV_EVAL_BATCH, 10**6):
        monkeypatch.setattr(base, "CPU_CONV_EVAL_BATCH", batch)
        model.decoder.calls.clear()
        torch.manual_seed(1)
        estimates[batch] = model.log_likelihood(x, n_samples=30, chunk_size=10)
        assert max(model.decoder.calls) == min(batch, 10 * B)
    torch.testing.assert_close(*estimates.values(), rtol=1e-6, atol=1e-5)
    model.decoder.calls.clear()
    model.loss(x.repeat(8, 1), beta=1.0)["loss"].backward()
    assert model.decoder.calls == [8 * B]


def test_vampprior_log_likelihood_encodes_the_pseudo_inputs_once():
    torch.manual_seed(0)
    model, x = make_model("vampprior"), tiny_batch()
    rows = []
    model.encoder.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    torch.manual_seed(1)
    ll = model.log_likelihood(x, n_samples=40, chunk_size=10)  # 4 chunks of samples
    assert sorted(rows) == [7, B]  # the M = 7 pseudo-inputs once, the images once
    model._components = None  # the uncached path: pseudo-inputs re-encoded in every chunk
    torch.manual_seed(1)
    torch.testing.assert_close(ll, super(VampPrior, model).log_likelihood(x, 40, 10))


def test_mixture_log_prob_expanded_matches_the_elementwise_form():
    """The matmul form of the VampPrior's mixture density equals the elementwise form evaluated in
    float64 (far components and small variances included) and is no further from it than the
    float32 elementwise form; shapes and dtype as ``mixture_log_prob``; chunking changes nothing."""
    from vhp_lightning.models.vampprior import mixture_log_prob, mixture_log_prob_expanded

    torch.manual_seed(0)
    z = 1.5 * torch.randn(300, 6)
    means, logvars = torch.randn(40, 6), 1.5 * torch.randn(40, 6) - 1.0
    means[0] += 25.0  # a component no row is near
    ref = mixture_log_prob(z.double(), means.double(), logvars.double())
    fast = mixture_log_prob_expanded(z, means, logvars)
    assert fast.shape == (300,) and fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), ref, rtol=1e-6, atol=1e-5)
    slow_err = (mixture_log_prob(z, means, logvars).double() - ref).abs().max()
    assert (fast.double() - ref).abs().max() <= slow_err + 1e-6
    chunked = mixture_log_prob_expanded(z, means, logvars, max_elements=means.numel() * 7)
    torch.testing.assert_close(chunked, fast, rtol=0, atol=1e-5)
    # one component, one row: log N(z; mu, diag(s)) in closed form
    z1, mu1, lv1 = (
        torch.tensor([[1.0, -2.0]]),
        torch.tensor([[0.5, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
    )
    closed = -0.5 * (2 * math.log(2 * math.pi) + 1.0 + 0.25 + 4.0 / math.e)
    torch.testing.assert_close(mixture_log_prob_expanded(z1, mu1, lv1), torch.tensor([closed]))


def test_vampprior_log_prior_uses_the_matmul_form_only_inside_log_likelihood(monkeypatch):
    """Training and validation keep the elementwise ``mixture_log_prob`` (their numbers do not
    change); ``log_likelihood`` (no gradients, components encoded once) uses the expanded one."""
    from vhp_lightning.models import vampprior

    calls = []

    def counted(name):
        real = getattr(vampprior, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("mixture_log_prob", "mixture_log_prob_expanded"):
        monkeypatch.setattr(vampprior, name, counted(name))
    torch.manual_seed(0)
    model, x = make_model("vampprior"), tiny_batch()
    model.loss(x, beta=1.0)["loss"].backward()
    assert set(calls) == {"mixture_log_prob"}
    calls.clear()
    model.log_likelihood(x, n_samples=20, chunk_size=10)
    assert set(calls) == {"mixture_log_prob_expanded"}


# --- the configs ----------------------------------------------------------------------------
CONFIGS = [f"{m},gated" for m in ("vae", "iwae", "iwae_l2", "vampprior", "vhp")] + ["vhp,conv64"]


@pytest.mark.parametrize("config", CONFIGS)
def test_model_config_instantiates(compose_cfg, config):
    """Each model config builds on a dataset's ``paper.*`` and ``data_shape`` with the conv nets
    (here on the pendulum's 16x16 images; the MNIST and Faces/Chairs datasets select these nets
    with their shapes; the pendulum's own MLP nets: tests/test_configs.py)."""
    from hydra.utils import instantiate

    name, nets = config.split(",")
    cfg = compose_cfg(f"model={name}", f"paper/nets={nets}", "dataset=pendulum", tiny=False)
    model = instantiate(cfg.model)
    if name == "vampprior":
        assert model.pseudo_raw.shape == (500, 1, 16, 16)
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    parts = model.loss(x, beta=0.5)
    assert all(torch.isfinite(v) for v in parts.values())
    assert model.sample(2).shape == (2, 256)
    assert model.log_likelihood(x[:2], n_samples=4, chunk_size=3).shape == (2,)
