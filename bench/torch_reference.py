"""One SNEP worker iteration written plainly in PyTorch eager: the baseline of docs/method.md §4.

This is "what a researcher would write in PyTorch" for the worker iteration of
Hasenclever et al., "Distributed Bayesian Learning with Stochastic Natural Gradient
Expectation Propagation and the Posterior Server", JMLR 18 (2017): CPU, float32,

1. the 784-500-300-10 ReLU MLP forward (``h @ W + b``, ``relu``, ``log_softmax``), the
   minibatch log-likelihood summed, and autograd for its gradient;
2. per parameter tensor, in the style of a ``torch.optim`` for-loop optimiser, ordinary
   tensor ops for the tilted-prior gradient (factor ``eta = anchor - site / beta`` with
   the precision guard), the SG-MCMC step (SGLD, pSGLD, SGHMC or the reference
   Adam-SGLD) with ``torch.randn`` noise, and the SNEP site step on the site's mean
   parameters with the projection;
3. the anchor refresh every ``n_inner`` iterations.

No fusion tricks: no ``torch.compile``, no ``foreach`` kernels, no hand-fused ops (those
are the peers :class:`CompiledTorchSnepWorker` and :class:`ForeachTorchSnepWorker`).  The
maths is that of ``fused_update`` in ``kernels/snep_fused.cuh`` (the float64 oracle is
``python/snep/maths/oracles.py``), so one iteration with the noise fixed matches
snep's fused pass to float32 rounding (``bench/test_torch_reference.py``).  The variance
of the site step uses the kernel's cancellation-free expansion of ``gamma2 - gamma1^2``,
as a careful float32 implementation would.

State lives in flat ``(C, P)`` tensors (``C`` chains, ``P`` parameters, the layout of
:class:`snep.model.spec.ParamSpec`); the layers are views into them, so the state can
be loaded from and compared with snep's :class:`~snep.maths.oracles.ChainArrays`.
The sampler and site step implement one sample per iteration (``K = 1``, no moment
accumulation), the worker's default.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = [
    "STATE_FIELDS",
    "TorchFwdBwd",
    "TorchSnepWorker",
    "fwd_bwd",
    "layer_views",
    "mlp_loglik",
    "update_tensor_",
]

#: the per-parameter state a worker keeps (the fields of ChainArrays minus the moments)
STATE_FIELDS = (
    "x",
    "anchor_prec",
    "anchor_pm",
    "site_prec",
    "site_pm",
    "cavity_prec",
    "cavity_pm",
    "s1",
    "s2",
)


def layer_views(spec: ParamSpec, flat: torch.Tensor) -> list[torch.Tensor]:
    """Views ``[W_0, b_0, W_1, b_1, ...]`` of a flat ``(C, P)`` tensor.

    ``W_l`` has shape ``(C, n_in, n_out)`` and ``b_l`` shape ``(C, n_out)``; writing into
    a view writes into ``flat``.
    """
    c = flat.shape[0]
    out = []
    for lay in spec.layers:
        out.append(flat[:, lay.w_slice].view(c, lay.n_in, lay.n_out))
        out.append(flat[:, lay.b_slice])
    return out


def mlp_loglik(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over the minibatch of ``log p(y | x)`` per chain, shape ``(C,)``.

    ``params`` as from :func:`layer_views`; ``x`` is ``(C, B, D)``, ``y`` ``(C, B)`` int64.
    """
    n_layers = len(params) // 2
    h = x
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        h = h @ w + b.unsqueeze(1)
        if i < n_layers - 1:
            h = torch.relu(h)
    logp = F.log_softmax(h, dim=-1)
    return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(dim=1)


def fwd_bwd(
    params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Forward and autograd backward: the log-likelihood ``(C,)`` and its gradient per tensor.

    The gradient is that of the *sum* of the log-likelihoods (an ascent direction), the
    convention of :meth:`snep.model.mlp_cpu.CpuMLP.loglik_and_grad`.
    """
    leaves = [p.detach().requires_grad_() for p in params]
    loglik = mlp_loglik(leaves, x, y)
    grads = torch.autograd.grad(loglik.sum(), leaves)
    return loglik.detach(), grads


class TorchFwdBwd:
    """The torch forward + backward alone, on preallocated inputs (benchmark (e)).

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    params : ndarray or Tensor, shape (C, P)
        Flat parameters (copied).
    x : ndarray, shape (C, B, D); y : ndarray of int, shape (C, B)
        One minibatch per chain (copied).
    """

    def __init__(self, spec: ParamSpec, params, x, y) -> None:
        self.spec = spec
        self.flat = torch.as_tensor(np.asarray(params, np.float32)).clone()
        self.params = layer_views(spec, self.flat)
        self.x = torch.as_tensor(np.asarray(x, np.float32)).clone()
        self.y = torch.as_tensor(np.asarray(y, np.int64)).clone()

    def __call__(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return fwd_bwd(self.params, self.x, self.y)

    def flat_grad(self) -> np.ndarray:
        """The gradient as a flat ``(C, P)`` float32 array (for tests)."""
        _, grads = self()
        return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1).numpy()


@torch.no_grad()
def update_tensor_(
    kind: SamplerKind,
    grad: torch.Tensor,
    st: dict[str, torch.Tensor],
    s: PassScalars,
    xi: torch.Tensor,
) -> torch.Tensor:
    """Sampler step + SNEP site step on one parameter tensor, in place.

    Parameters
    ----------
    kind : SamplerKind
    grad : Tensor
        Gradient of the minibatch log-likelihood (sum over the batch).
    st : dict of Tensor
        Views of this tensor's state, keyed by :data:`STATE_FIELDS`; updated in place.
    s : PassScalars
        The pass's scalars (``accumulate`` must be 0: one sample per iteration).
    xi : Tensor
        Standard normal noise of the same shape.

    Returns
    -------
    Tensor
        How often the tilted-precision guard fired (0-d int tensor).
    """
    x = st["x"]
    ap, apm = st["anchor_prec"], st["anchor_pm"]
    sp, spm = st["site_prec"], st["site_pm"]
    cp, cpm = st["cavity_prec"], st["cavity_pm"]
    s1, s2 = st["s1"], st["s2"]

    # tilted factor eta = anchor - site / beta, its precision guarded (GUARD_SLACK)
    lam_eta = ap - sp * s.inv_beta
    h_eta = apm - spm * s.inv_beta
    lam_min = s.prec_floor - 0.5 * sp * s.inv_beta
    fired = lam_eta < lam_min
    lam_eta = torch.where(fired, lam_min, lam_eta)
    # gradient of the tilted log density
    g = s.lik_scale * grad + (h_eta - lam_eta * x)

    eps = s.step_size
    if kind == SamplerKind.SGLD:
        x += 0.5 * eps * g + s.noise_scale * math.sqrt(eps) * xi
    elif kind == SamplerKind.PSGLD:
        v = s.rms_decay * s1 + (1.0 - s.rms_decay) * g * g
        s1.copy_(v)
        sv = torch.sqrt(v / s.bias_corr2)  # bias-corrected, as in the kernel
        precond = 1.0 / (s.rms_eps + sv)
        drift = precond * g
        if s.gamma_term:
            gamma = precond * precond * (1.0 - s.rms_decay) * g * lam_eta
            drift = drift + gamma / ((sv + 1e-30) * s.bias_corr2)
        x += 0.5 * eps * drift + s.noise_scale * torch.sqrt(eps * precond) * xi
    elif kind == SamplerKind.SGHMC:
        noise_sd = s.noise_scale * math.sqrt(2.0 * s.friction * eps)
        mom = (1.0 - s.friction) * s1 + eps * g + noise_sd * xi
        s1.copy_(mom)
        x += mom
    elif kind == SamplerKind.ADAM_SGLD:
        m = s.beta1 * s1 + (1.0 - s.beta1) * g
        v = s.beta2 * s2 + (1.0 - s.beta2) * g * g
        s1.copy_(m)
        s2.copy_(v)
        alpha = eps / (torch.sqrt(v / s.bias_corr2) + s.adam_eps)
        sd = torch.clamp(torch.sqrt(2.0 * alpha), max=eps * s.kappa)
        x += alpha * (m / s.bias_corr1) + s.noise_scale * sd * xi
    else:
        raise ValueError(f"unknown sampler kind {kind!r}; expected one of {list(SamplerKind)}")

    if s.update_site:
        # SNEP inner step on the site's mean parameters (m, m^2 + v), then projection;
        # the sample's moments are (x, x^2) (K = 1)
        sx, sx2 = x, x * x
        loc_var = 1.0 / (cp + sp)
        loc_mean = (cpm + spm) * loc_var
        site_var = 1.0 / sp
        site_mean = spm * site_var
        e = s.site_step
        d = sx - loc_mean
        g1 = site_mean + e * d
        # gamma2 - gamma1^2 expanded so that no large squares cancel in float32
        var = site_var + e * (d * (sx + loc_mean - 2.0 * site_mean) + (sx2 - sx * sx) - loc_var)
        var = var - e * e * d * d
        var = torch.clamp(var, s.v_lo, s.v_hi)
        mean = torch.clamp(g1, s.m_lo, s.m_hi)
        sp.copy_(1.0 / var)
        spm.copy_(mean * sp)
    return fired.sum()


class TorchSnepWorker:
    """A SNEP worker's iteration in plain PyTorch eager (benchmark (b)).

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    kind : SamplerKind
        Sampler rule.
    scalars : PassScalars
        The worker's pass scalars (copied; take them from a :class:`SnepWorker` to run
        the same configuration); ``step`` and the Adam bias corrections are advanced here.
    x_data : ndarray (N, D); y_data : ndarray (N,)
        The worker's shard (shared with numpy when already float32/int64).
    n_chains, batch_size : int
    n_inner : int
        Anchor refresh period.
    seed : int
        Seeds the minibatch order and the noise (``torch.Generator``).
    """

    def __init__(
        self,
        spec: ParamSpec,
        kind: SamplerKind,
        scalars: PassScalars,
        x_data: np.ndarray,
        y_data: np.ndarray,
        n_chains: int = 1,
        batch_size: int = 100,
        n_inner: int = 10,
        seed: int = 0,
    ) -> None:
        if scalars.accumulate:
            raise ValueError(
                "TorchSnepWorker implements one sample per iteration (accumulate=0); "
                f"got accumulate={scalars.accumulate}"
            )
        self.spec = spec
        self.kind = SamplerKind(kind)
        self.scalars = dataclasses.replace(scalars)
        self.n_chains, self.batch_size, self.n_inner = n_chains, batch_size, n_inner
        p = spec.size
        self.state = {name: torch.zeros(n_chains, p) for name in STATE_FIELDS}
        views = {name: layer_views(spec, t) for name, t in self.state.items()}
        self.layers = [
            {name: views[name][i] for name in STATE_FIELDS} for i in range(2 * spec.n_layers)
        ]
        self.x_data = torch.as_tensor(np.ascontiguousarray(x_data, np.float32))
        self.y_data = torch.as_tensor(np.ascontiguousarray(y_data, np.int64))
        self.gen = torch.Generator().manual_seed(seed)
        self._perm = torch.randperm(len(self.y_data), generator=self.gen)
        self._pos = 0
        self.iteration = 0
        self.guard_fired = 0

    # ---------------------------------------------------------------- state
    def load(self, arrays: ChainArrays) -> None:
        """Copy snep's per-chain arrays (float32, shape (C, P)) into this worker."""
        for name in STATE_FIELDS:
            self.state[name].copy_(torch.from_numpy(np.asarray(getattr(arrays, name))))

    def numpy_state(self) -> dict[str, np.ndarray]:
        """Copies of the state as float32 numpy arrays (C, P)."""
        return {name: t.numpy().copy() for name, t in self.state.items()}

    # ------------------------------------------------------------ iteration
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch of each chain, ``(C, B, D)`` and ``(C, B)``; epochs reshuffle."""
        need = self.n_chains * self.batch_size
        n = len(self.y_data)
        if self._pos + need > n:
            self._perm = torch.randperm(n, generator=self.gen)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + need].view(self.n_chains, self.batch_size)
        self._pos += need
        return self.x_data[idx], self.y_data[idx]

    def params(self) -> list[torch.Tensor]:
        """Views ``[W_0, b_0, ...]`` of the chains' positions."""
        return [layer["x"] for layer in self.layers]

    def update(self, grads, noise: list[torch.Tensor] | None = None) -> int:
        """Sampler + site step on every parameter tensor; returns the guard count.

        ``noise``: per-tensor standard normals (default: ``torch.randn``).
        """
        s = self.scalars
        fired = 0
        for i, (layer, g) in enumerate(zip(self.layers, grads, strict=True)):
            if noise is None:
                xi = torch.randn(g.shape, generator=self.gen)
            else:
                xi = noise[i]
            fired += update_tensor_(self.kind, g, layer, s, xi)
        return int(fired)

    def step_on(
        self, x: torch.Tensor, y: torch.Tensor, noise: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One iteration on the given minibatch; returns the log-likelihood per chain."""
        loglik, grads = fwd_bwd(self.params(), x, y)
        self.iteration += 1
        s = self.scalars
        s.set_step(self.kind, self.iteration)
        self.guard_fired += self.update(grads, noise)
        if self.iteration % self.n_inner == 0:  # outer step: anchor <- local posterior
            st = self.state
            torch.add(st["cavity_prec"], st["site_prec"], out=st["anchor_prec"])
            torch.add(st["cavity_pm"], st["site_pm"], out=st["anchor_pm"])
        return loglik

    def step(self) -> torch.Tensor:
        """One full iteration: minibatch gather, forward/backward, sampler + site step."""
        x, y = self.next_batch()
        return self.step_on(x, y)


def _flat_update(kind: SamplerKind, st: dict, grad, s: dict, xi, update_site: bool):
    """The sampler + site step on the flat state, out of place (for ``torch.compile``)."""
    x = st["x"]
    ap, apm, sp, spm = st["anchor_prec"], st["anchor_pm"], st["site_prec"], st["site_pm"]
    cp, cpm, s1, s2 = st["cavity_prec"], st["cavity_pm"], st["s1"], st["s2"]
    lam_eta = ap - sp * s["inv_beta"]
    h_eta = apm - spm * s["inv_beta"]
    lam_min = s["prec_floor"] - 0.5 * sp * s["inv_beta"]
    lam_eta = torch.where(lam_eta < lam_min, lam_min, lam_eta)
    g = s["lik_scale"] * grad + (h_eta - lam_eta * x)
    eps = s["step_size"]
    if kind == SamplerKind.SGLD:
        x = x + 0.5 * eps * g + s["noise_scale"] * torch.sqrt(eps) * xi
    elif kind == SamplerKind.ADAM_SGLD:
        s1 = s["beta1"] * s1 + (1.0 - s["beta1"]) * g
        s2 = s["beta2"] * s2 + (1.0 - s["beta2"]) * g * g
        alpha = eps / (torch.sqrt(s2 / s["bias_corr2"]) + s["adam_eps"])
        sd = torch.minimum(torch.sqrt(2.0 * alpha), eps * s["kappa"])
        x = x + alpha * (s1 / s["bias_corr1"]) + s["noise_scale"] * sd * xi
    else:
        raise ValueError(f"the compiled peer implements sgld and adam_sgld, not {kind!r}")
    out = {**st, "x": x, "s1": s1, "s2": s2}
    if update_site:
        loc_var = 1.0 / (cp + sp)
        loc_mean = (cpm + spm) * loc_var
        site_var = 1.0 / sp
        site_mean = spm * site_var
        e = s["site_step"]
        d = x - loc_mean
        var = site_var + e * (d * (x + loc_mean - 2.0 * site_mean) - loc_var) - e * e * d * d
        var = torch.clamp(var, s["v_lo"], s["v_hi"])
        mean = torch.clamp(site_mean + e * d, s["m_lo"], s["m_hi"])
        out["site_prec"] = 1.0 / var
        out["site_pm"] = mean / var
    return out


class CompiledTorchSnepWorker(TorchSnepWorker):
    """The same iteration with ``torch.compile``: the forward and backward through
    ``torch.func.grad`` and the whole elementwise update on the flat state, compiled by
    Inductor into fused C++ loops (the strongest PyTorch a user would pick; benchmark
    (b'')).  Scalars are passed as 0-d tensors so that a changing bias correction does
    not recompile."""

    SCALARS = (
        "lik_scale", "inv_beta", "prec_floor", "step_size", "noise_scale", "beta1", "beta2",
        "adam_eps", "kappa", "site_step", "v_lo", "v_hi", "m_lo", "m_hi", "bias_corr1",
        "bias_corr2",
    )  # fmt: skip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        spec, kind = self.spec, self.kind

        def step_fn(st, x, y, xi, s, update_site: bool):
            def total(p):
                return mlp_loglik(layer_views(spec, p), x, y).sum()

            grad = torch.func.grad(total)(st["x"])
            return _flat_update(kind, st, grad, s, xi, update_site)

        self._compiled = torch.compile(step_fn, dynamic=False)

    def step_on(self, x, y, noise=None):
        self.iteration += 1
        s = self.scalars
        s.set_step(self.kind, self.iteration)
        xi = noise if noise is not None else torch.randn(self.state["x"].shape, generator=self.gen)
        sc = {k: torch.tensor(float(getattr(s, k)), dtype=torch.float32) for k in self.SCALARS}
        new = self._compiled(dict(self.state), x, y, xi, sc, bool(s.update_site))
        for name in STATE_FIELDS:
            self.state[name] = new[name]
        if self.iteration % self.n_inner == 0:
            st = self.state
            st["anchor_prec"] = st["cavity_prec"] + st["site_prec"]
            st["anchor_pm"] = st["cavity_pm"] + st["site_pm"]
        return None


class ForeachTorchSnepWorker(TorchSnepWorker):
    """The same iteration with the update in ``torch._foreach_*`` multi-tensor ops over the
    layers' tensors, as ``torch.optim`` optimisers run with ``foreach=True`` (the foreach
    peer of benchmark (b)); the forward and backward as the eager baseline.  SGLD and
    Adam-SGLD (the benchmark's samplers), one sample per iteration; the guard clamps the
    tilted precision with ``_foreach_maximum`` (the same where it is finite)."""

    def update(self, grads, noise: list[torch.Tensor] | None = None) -> int:
        if self.kind not in (SamplerKind.SGLD, SamplerKind.ADAM_SGLD):
            raise ValueError(f"the foreach peer implements sgld and adam_sgld, not {self.kind!r}")
        s, fe = self.scalars, torch
        field = {name: [layer[name] for layer in self.layers] for name in STATE_FIELDS}
        x, sp, spm = field["x"], field["site_prec"], field["site_pm"]
        if noise is None:
            noise = [torch.randn(g.shape, generator=self.gen) for g in grads]
        # tilted factor eta = anchor - site / beta, its precision guarded (GUARD_SLACK)
        sp_b = fe._foreach_mul(sp, s.inv_beta)
        lam_eta = fe._foreach_sub(field["anchor_prec"], sp_b)
        h_eta = fe._foreach_sub(field["anchor_pm"], fe._foreach_mul(spm, s.inv_beta))
        lam_min = fe._foreach_add(fe._foreach_mul(sp_b, -0.5), s.prec_floor)
        fired = sum(int((le < lm).sum()) for le, lm in zip(lam_eta, lam_min, strict=True))
        lam_eta = fe._foreach_maximum(lam_eta, lam_min)
        g = fe._foreach_mul(list(grads), s.lik_scale)
        fe._foreach_add_(g, fe._foreach_sub(h_eta, fe._foreach_mul(lam_eta, x)))
        eps = s.step_size
        if self.kind == SamplerKind.SGLD:
            fe._foreach_add_(x, fe._foreach_mul(g, 0.5 * eps))
            fe._foreach_add_(x, fe._foreach_mul(noise, s.noise_scale * math.sqrt(eps)))
        else:
            m, v = field["s1"], field["s2"]
            fe._foreach_mul_(m, s.beta1)
            fe._foreach_add_(m, g, alpha=1.0 - s.beta1)
            fe._foreach_mul_(v, s.beta2)
            fe._foreach_addcmul_(v, g, g, value=1.0 - s.beta2)
            denom = fe._foreach_sqrt(fe._foreach_div(v, s.bias_corr2))
            fe._foreach_add_(denom, s.adam_eps)
            alpha = fe._foreach_reciprocal(denom)
            fe._foreach_mul_(alpha, eps)
            sd = fe._foreach_sqrt(fe._foreach_mul(alpha, 2.0))
            fe._foreach_clamp_max_(sd, eps * s.kappa)
            fe._foreach_add_(x, fe._foreach_mul(alpha, fe._foreach_div(m, s.bias_corr1)))
            fe._foreach_addcmul_(x, sd, noise, value=s.noise_scale)
        if s.update_site:  # as update_tensor_ (K = 1: sx2 - sx^2 = 0)
            cp, cpm, e = field["cavity_prec"], field["cavity_pm"], s.site_step
            loc_var = fe._foreach_reciprocal(fe._foreach_add(cp, sp))
            loc_mean = fe._foreach_mul(fe._foreach_add(cpm, spm), loc_var)
            site_var = fe._foreach_reciprocal(sp)
            site_mean = fe._foreach_mul(spm, site_var)
            d = fe._foreach_sub(x, loc_mean)
            mean = fe._foreach_add(site_mean, fe._foreach_mul(d, e))
            t = fe._foreach_add(x, loc_mean)
            fe._foreach_sub_(t, fe._foreach_mul(site_mean, 2.0))
            fe._foreach_mul_(t, d)
            fe._foreach_sub_(t, loc_var)
            fe._foreach_mul_(t, e)
            var = fe._foreach_add(site_var, t)
            fe._foreach_sub_(var, fe._foreach_mul(fe._foreach_mul(d, d), e * e))
            fe._foreach_clamp_min_(var, s.v_lo)
            fe._foreach_clamp_max_(var, s.v_hi)
            fe._foreach_clamp_min_(mean, s.m_lo)
            fe._foreach_clamp_max_(mean, s.m_hi)
            new_prec = fe._foreach_reciprocal(var)
            fe._foreach_copy_(sp, new_prec)
            fe._foreach_copy_(spm, fe._foreach_mul(mean, new_prec))
        return fired
