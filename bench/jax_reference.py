"""One SNEP worker iteration in JAX, compiled with ``jax.jit``: the strongest CPU peer.

What a researcher fluent in JAX would write for the worker iteration of Hasenclever et
al., JMLR 18 (2017) (docs/method.md §1.3, §4): one jitted function that gathers the
minibatch, runs the MLP forward, takes ``jax.grad`` of the summed log-likelihood, and
applies the tilted-prior gradient with the precision guard, the SG-MCMC step (SGLD,
pSGLD, SGHMC or the reference Adam-SGLD with its clipped noise) with noise from
``jax.random.normal``, and the SNEP site step on the site's mean parameters with the
projection, all on flat ``(C, P)`` float32 state that XLA fuses as it sees fit.  The
anchor refresh every ``n_inner`` iterations is a second jitted function.  The maths is
that of ``fused_update`` in ``kernels/snep_fused.cuh`` (float64 oracle:
``python/snep/maths/oracles.py``), so one iteration with the noise fixed matches
snep to float32 rounding (``bench/test_jax_reference.py``).

JAX is an optional peer (``pip install "jax[cpu]"``); its thread count is XLA's
(``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` for
one thread, which ``bench/conftest.py`` sets before JAX loads).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["STATE_FIELDS", "JaxSnepWorker", "scalar_args", "snep_update", "step_on"]

STATE_FIELDS = (
    "x", "anchor_prec", "anchor_pm", "site_prec", "site_pm", "cavity_prec", "cavity_pm",
    "s1", "s2",
)  # fmt: skip
#: the pass scalars the update reads (traced: changing them does not recompile)
SCALARS = (
    "lik_scale", "inv_beta", "prec_floor", "step_size", "noise_scale", "beta1", "beta2",
    "adam_eps", "kappa", "rms_decay", "rms_eps", "friction", "site_step", "v_lo", "v_hi",
    "m_lo", "m_hi", "bias_corr1", "bias_corr2",
)  # fmt: skip


def scalar_args(s: PassScalars) -> dict[str, Any]:
    """The traced float32 scalars of ``s``."""
    return {k: jnp.float32(getattr(s, k)) for k in SCALARS}


def loglik(spec: ParamSpec, flat: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Sum over the minibatch of ``log p(y | x)`` per chain (C,); ``flat`` (C, P)."""
    c = flat.shape[0]
    h = x
    for i, lay in enumerate(spec.layers):
        w = flat[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out)
        h = h @ w + flat[:, lay.b_slice][:, None, :]
        if i < spec.n_layers - 1:
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h, axis=-1)
    return jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0].sum(axis=1)


def snep_update(
    kind: SamplerKind,
    st: dict,
    grad: jnp.ndarray,
    s: dict,
    xi: jnp.ndarray,
    update_site: bool,
    gamma_term: bool = False,
) -> tuple[dict, jnp.ndarray]:
    """Sampler step + SNEP site step on the flat state (pure); returns (state, fired)."""
    x = st["x"]
    ap, apm, sp, spm = st["anchor_prec"], st["anchor_pm"], st["site_prec"], st["site_pm"]
    cp, cpm, s1, s2 = st["cavity_prec"], st["cavity_pm"], st["s1"], st["s2"]
    lam_eta = ap - sp * s["inv_beta"]
    h_eta = apm - spm * s["inv_beta"]
    lam_min = s["prec_floor"] - 0.5 * sp * s["inv_beta"]
    fired = lam_eta < lam_min
    lam_eta = jnp.where(fired, lam_min, lam_eta)
    g = s["lik_scale"] * grad + (h_eta - lam_eta * x)
    eps = s["step_size"]
    if kind == SamplerKind.SGLD:
        x = x + 0.5 * eps * g + s["noise_scale"] * jnp.sqrt(eps) * xi
    elif kind == SamplerKind.PSGLD:
        s1 = s["rms_decay"] * s1 + (1.0 - s["rms_decay"]) * g * g
        sv = jnp.sqrt(s1 / s["bias_corr2"])
        precond = 1.0 / (s["rms_eps"] + sv)
        drift = precond * g
        if gamma_term:
            gamma = precond * precond * (1.0 - s["rms_decay"]) * g * lam_eta
            drift = drift + gamma / ((sv + 1e-30) * s["bias_corr2"])
        x = x + 0.5 * eps * drift + s["noise_scale"] * jnp.sqrt(eps * precond) * xi
    elif kind == SamplerKind.SGHMC:
        noise_sd = s["noise_scale"] * jnp.sqrt(2.0 * s["friction"] * eps)
        s1 = (1.0 - s["friction"]) * s1 + eps * g + noise_sd * xi
        x = x + s1
    elif kind == SamplerKind.ADAM_SGLD:
        s1 = s["beta1"] * s1 + (1.0 - s["beta1"]) * g
        s2 = s["beta2"] * s2 + (1.0 - s["beta2"]) * g * g
        alpha = eps / (jnp.sqrt(s2 / s["bias_corr2"]) + s["adam_eps"])
        sd = jnp.minimum(jnp.sqrt(2.0 * alpha), eps * s["kappa"])
        x = x + alpha * (s1 / s["bias_corr1"]) + s["noise_scale"] * sd * xi
    else:
        raise ValueError(f"unknown sampler kind {kind!r}")
    out = {**st, "x": x, "s1": s1, "s2": s2}
    if update_site:
        loc_var = 1.0 / (cp + sp)
        loc_mean = (cpm + spm) * loc_var
        site_var = 1.0 / sp
        site_mean = spm * site_var
        e = s["site_step"]
        d = x - loc_mean
        var = site_var + e * (d * (x + loc_mean - 2.0 * site_mean) - loc_var) - e * e * d * d
        var = jnp.clip(var, s["v_lo"], s["v_hi"])
        mean = jnp.clip(site_mean + e * d, s["m_lo"], s["m_hi"])
        out["site_prec"] = 1.0 / var
        out["site_pm"] = mean / var
    return out, fired.sum()


def _iterate(spec, kind, st, x, y, xi, s, update_site):
    """One iteration on the minibatch ``(x, y)`` with the noise ``xi``: the minibatch
    log-likelihood per chain before the step, ``jax.grad``, the sampler + site step."""
    ll, grad = jax.value_and_grad(lambda p: loglik(spec, p, x, y).sum())(st["x"])
    st, fired = snep_update(kind, st, grad, s, xi, update_site)
    return st, ll, fired


#: one iteration on a given minibatch with given noise (for the tests)
step_on = jax.jit(_iterate, static_argnums=(0, 1, 7))


@partial(jax.jit, static_argnums=(0, 1, 8))
def _step(spec, kind, st, x_data, y_data, idx, key, s, update_site):
    xi = jax.random.normal(key, st["x"].shape, jnp.float32)
    return _iterate(spec, kind, st, x_data[idx], y_data[idx], xi, s, update_site)


@jax.jit
def _refresh(st):
    return {**st, "anchor_prec": st["cavity_prec"] + st["site_prec"],
            "anchor_pm": st["cavity_pm"] + st["site_pm"]}  # fmt: skip


class JaxSnepWorker:
    """A SNEP worker's iteration as one ``jax.jit`` function (benchmark peer).

    Same parameters as ``torch_reference.TorchSnepWorker``.
    """

    def __init__(self, spec: ParamSpec, kind: SamplerKind, scalars: PassScalars,
                 x_data: np.ndarray, y_data: np.ndarray, n_chains: int = 1,
                 batch_size: int = 100, n_inner: int = 10, seed: int = 0) -> None:  # fmt: skip
        import dataclasses

        self.spec, self.kind = spec, SamplerKind(kind)
        self.scalars = dataclasses.replace(scalars)
        self.n_chains, self.batch_size, self.n_inner = n_chains, batch_size, n_inner
        self.state = {k: jnp.zeros((n_chains, spec.size), jnp.float32) for k in STATE_FIELDS}
        self.x_data = jnp.asarray(np.ascontiguousarray(x_data, np.float32))
        self.y_data = jnp.asarray(np.ascontiguousarray(y_data, np.int32))
        self.key = jax.random.PRNGKey(seed)
        self.rng = np.random.default_rng(seed)
        self._perm = self.rng.permutation(len(y_data))
        self._pos = 0
        self.iteration = 0

    def load(self, arrays: ChainArrays) -> None:
        """Copy snep's per-chain arrays (float32, (C, P)) into this worker."""
        self.state = {k: jnp.asarray(np.asarray(getattr(arrays, k), np.float32)) for k in
                      STATE_FIELDS}  # fmt: skip

    def next_indices(self) -> np.ndarray:
        need = self.n_chains * self.batch_size
        if self._pos + need > len(self._perm):
            self._perm = self.rng.permutation(len(self._perm))
            self._pos = 0
        idx = self._perm[self._pos : self._pos + need].reshape(self.n_chains, self.batch_size)
        self._pos += need
        return idx

    def step(self) -> Any:
        """One iteration: minibatch gather, fwd + ``jax.grad``, sampler + site step."""
        self.iteration += 1
        s = self.scalars
        s.set_step(self.kind, self.iteration)
        self.key, sub = jax.random.split(self.key)
        self.state, ll, _ = _step(
            self.spec, self.kind, self.state, self.x_data, self.y_data,
            jnp.asarray(self.next_indices()), sub, scalar_args(s), bool(s.update_site),
        )  # fmt: skip
        if self.iteration % self.n_inner == 0:
            self.state = _refresh(self.state)
        return ll

    def block(self) -> None:
        """Wait for the asynchronous dispatch to finish (timing must include it)."""
        jax.block_until_ready(self.state["x"])
