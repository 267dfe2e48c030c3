"""Conditional GAN surrogate (WGAN-GP): p(fields | parameters, t) by adversarial training."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from gensim.models.base import fused_adam, warmup_cosine
from gensim.models.components import Critic, Decoder
from gensim.models.components.decoder import NetFactory
from gensim.models.generative import DistributionCheck, GenerativeSurrogate
from gensim.simulations.base import FieldSpec


class ConditionalGAN(GenerativeSurrogate):
    """A conditional Wasserstein GAN with gradient penalty over the flattened, normalized fields.

    The generator is a :class:`~gensim.models.components.Decoder` of (condition, latent); the
    critic a :class:`~gensim.models.components.Critic` of (fields, condition); both see the same
    normalized condition ``c`` = (parameters, t). Losses (Gulrajani et al. 2017):

    - critic: ``E f(G(z, c), c) - E f(y, c) + gp_weight E (||grad f(x_hat, c)|| - 1)^2
      + drift_weight E f(y, c)^2``, with ``x_hat`` on segments between real and generated
      fields; the small drift term keeps the scores from wandering off (Karras et al. 2018);
    - generator: ``-E f(G(z, c), c) + energy_score_weight ES``, with
      ``ES = E ||G(z, c) - y|| - 0.5 E ||G(z, c) - G(z', c)||`` the energy score of the
      generator at the real field's condition, estimated with two draws. The energy score is a
      strictly proper scoring rule (Gneiting & Raftery 2007): its expectation is minimal when
      the generator's law is the true conditional law, so the term leaves the GAN's optimum
      where it is, while it gives the generator a direct signal on the conditional mean and
      spread, which the critic conveys only slowly. 0 leaves a pure WGAN-GP.

    Optimization is manual, one optimizer step per training batch: ``n_critic`` critic steps,
    then one generator step, in turn. ``trainer.max_steps`` therefore counts both, and every
    batch is used once.

    Samples (and the mean prediction) come from an exponential moving average of the generator's
    weights (Karras et al. 2018; Yazici et al. 2019) when ``ema_decay > 0``: adversarial training
    keeps the generator oscillating around a good solution, and the average sits closer to it.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
    n_params : int
    net : callable
        Generator network factory (the deterministic surrogate's decoder network).
    critic_net : callable
        Critic network factory, ``critic_net(in_features, 1)``.
    latent_dim : int
    n_critic : int
        Critic steps per generator step.
    gp_weight : float
        Gradient-penalty weight.
    drift_weight : float
        Weight of the squared real score in the critic loss.
    spectral_norm : bool
        Spectral normalization on the critic's linear layers.
    projection_features : int
        Width of the critic's projection conditioning (see
        :class:`~gensim.models.components.Critic`); 0 for none.
    ema_decay : float
        Decay per generator step of the weight average used for sampling, in [0, 1); 0 samples
        from the trained generator itself.
    energy_score_weight : float
        Weight of the energy-score term of the generator loss (0: pure WGAN-GP). 4 rather than 1
        lowered the held-out energy distance / floor on the stochastic heat field from 2.34 to
        2.21 (one seed each, ``reports/generative/distribution.md``).
    lr, critic_lr : float
        Adam learning rates (``critic_lr`` defaults to ``lr``).
    betas : (float, float)
        Adam betas of both optimizers.
    warmup_steps, final_lr_ratio : int, float
        Linear warm-up, then cosine decay of both learning rates over ``trainer.max_steps``
        (a function of the global step).
    normalizer_warmup_batches : int
    time_features : sequence of str
        Features of t in the condition (:data:`gensim.models.base.TIME_FEATURES`).
    n_mean_samples : int
        Generated fields averaged by the mean prediction (``forward``).
    check : DistributionCheck, optional
        Held-out distribution check settings (its diversity ratio flags mode collapse).
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        critic_net: NetFactory,
        latent_dim: int = 32,
        n_critic: int = 2,
        gp_weight: float = 10.0,
        drift_weight: float = 1e-3,
        spectral_norm: bool = False,
        projection_features: int = 256,
        ema_decay: float = 0.995,
        energy_score_weight: float = 4.0,
        lr: float = 5e-4,
        critic_lr: float | None = None,
        betas: Sequence[float] = (0.5, 0.9),
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.05,
        normalizer_warmup_batches: int = 100,
        n_mean_samples: int = 32,
        check: DistributionCheck | None = None,
        time_features: Sequence[str] = ("t",),
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, latent_dim, n_mean_samples, check, time_features)
        if n_critic < 1 or min(gp_weight, drift_weight, energy_score_weight) < 0 or not 0 <= ema_decay < 1:
            raise ValueError(
                f"expected n_critic >= 1, gp_weight, drift_weight and energy_score_weight >= 0, and "
                f"0 <= ema_decay < 1, got {n_critic}, {gp_weight}, {drift_weight}, "
                f"{energy_score_weight} and {ema_decay}"
            )
        self.save_hyperparameters(ignore=["net", "critic_net", "fields", "check"])
        self.record_fields()
        self.automatic_optimization = False
        self.generator = Decoder(self.n_cond, self.latent_dim, self.n_out, net)
        self.critic = Critic(
            self.n_out, self.n_cond, critic_net, spectral_norm=spectral_norm, projection_features=projection_features
        )
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if ema_decay > 0 else None

    def generate(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The averaged generator outside training (when there is one), the trained one inside."""
        if self.generator_ema is not None and not self.training:
            return self.generator_ema(cond, z)
        return self.generator(cond, z)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.hparams.ema_decay
        for avg, new in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(new, 1.0 - decay)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(||grad_x f(x_hat, c)|| - 1)^2`` (B,) on random points between real and fake (B, D)."""
        eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(x_hat, cond).sum(), x_hat, create_graph=True)
        return (grad.norm(dim=1) - 1.0) ** 2

    def critic_loss(
        self, cond: torch.Tensor, y: torch.Tensor, z: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The critic's loss (see the class notes) on a normalized batch, and what to log.

        Every expectation is over the batch's conditions, so each per-sample term is averaged
        with the buffer's importance weights, if any (:meth:`batch_mean`).

        Parameters
        ----------
        cond : Tensor, shape (B, n_cond)
        y : Tensor, shape (B, D)
        z : Tensor, shape (B, latent_dim)
        batch : dict
            The training batch, for ``"weight"``.
        """
        fake = self.generator(cond, z).detach()
        real_score, fake_score = self.critic(y, cond), self.critic(fake, cond)
        gp = self.batch_mean(self.gradient_penalty(y, fake, cond), batch)
        gap = self.batch_mean(real_score - fake_score, batch)
        loss = -gap + self.hparams.gp_weight * gp + self.hparams.drift_weight * self.batch_mean(real_score**2, batch)
        return loss, {"critic_loss": loss.detach(), "wasserstein": gap.detach(), "gradient_penalty": gp.detach()}

    def generator_loss(
        self, cond: torch.Tensor, y: torch.Tensor, z: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's loss (see the class notes) on a normalized batch, and what to log.

        Parameters are those of :meth:`critic_loss`; importance weights apply the same way.
        """
        fake = self.generator(cond, z)
        loss = -self.batch_mean(self.critic(fake, cond), batch)
        logs = {}
        if self.hparams.energy_score_weight > 0:
            other = self.generator(cond, torch.randn_like(z))
            score = self.batch_mean(
                0.5 * ((fake - y).norm(dim=1) + (other - y).norm(dim=1)) - 0.5 * (fake - other).norm(dim=1), batch
            )
            loss = loss + self.hparams.energy_score_weight * score
            logs["generator_energy_score"] = score.detach()
        return loss, {"generator_loss": loss.detach(), **logs}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_c = self.optimizers()
        cond, y = self.normalized_batch(batch)
        z = torch.randn(y.shape[0], self.latent_dim, device=y.device, dtype=y.dtype)
        n_critic = self.hparams.n_critic
        critic_turn = self.global_step % (n_critic + 1) < n_critic
        self._follow_schedule(
            opt_c if critic_turn else opt_g,
            (self.hparams.critic_lr or self.hparams.lr) if critic_turn else self.hparams.lr,
        )
        if critic_turn:
            loss, logs = self.critic_loss(cond, y, z, batch)
            opt_c.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_c.step()
        else:
            loss, logs = self.generator_loss(cond, y, z, batch)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_g.step()
            if self.generator_ema is not None:
                self._update_ema()
        self.log_dict(logs)

    def _follow_schedule(self, optimizer, base_lr: float) -> None:
        """Set the learning rate of the optimizer about to step from the global step.

        A function of ``global_step`` (checkpointed), not a scheduler object: with alternating
        optimizers a scheduler per optimizer would be stepped before its optimizer's first step.
        """
        total = self.total_steps()
        if total is None:
            return
        factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.final_lr_ratio)(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = base_lr * factor

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        fused = fused_adam(self)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas, **fused)
        opt_c = torch.optim.Adam(
            self.critic.parameters(), lr=self.hparams.critic_lr or self.hparams.lr, betas=betas, **fused
        )
        return [opt_g, opt_c]
