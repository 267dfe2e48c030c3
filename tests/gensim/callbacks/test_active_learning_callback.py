"""ActiveLearning, SnapshotDisagreement and SimulationPacing: unit checks, then live training loops."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from gloo_ranks import run_ranks
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.buffers import FIFO, ReplayBuffer, Reservoir
from gensim.callbacks import ActiveLearning, SimulationPacing, SnapshotDisagreement
from gensim.data import StreamingDataModule
from gensim.launch import Launcher
from gensim.launch.executors import LocalExecutor
from gensim.metrics import relative_l2
from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave
from gensim.transport.receiver import Receiver
from sampling import ActiveSampler, LossAcquisition, Sobol, UncertaintyAcquisition

SIM_CFG = {"_target_": "gensim.simulations.DecayingWave", "size": 8, "n_steps": 5}
BUDGET = 24


def tiny_model(seed: int = 0) -> DeterministicSurrogate:
    torch.manual_seed(seed)
    return DeterministicSurrogate(
        DecayingWave(size=8, n_steps=5).fields,
        2,
        net=partial(MLP, hidden=(16,)),
        warmup_steps=5,
        normalizer_warmup_batches=2,
    )


class Toy(L.LightningModule):
    """A linear map (params, t) -> 8 values: what the callbacks need of a surrogate, and no more."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 8)

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([params, t[:, None]], dim=1))


def make_datamodule(tmp_path, sampler, policy=None) -> StreamingDataModule:
    sim = DecayingWave(size=8, n_steps=5)
    return StreamingDataModule(
        simulation=sim,
        sampler=sampler,
        launcher=Launcher(SIM_CFG, LocalExecutor(), n_parallel=2, max_simulations=BUDGET, log_dir=str(tmp_path / "w")),
        buffer=partial(ReplayBuffer, capacity=200, policy=policy or Reservoir(), seed=0),
        receiver=Receiver,
        validation_sampler=partial(Sobol, seed=99),
        batch_size=16,
        steps_per_epoch=1000,
        watermark=40,
        n_validation=2,
        seed=0,
    )


def trainer(tmp_path, callbacks, max_steps=120) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )


# --- unit checks ------------------------------------------------------------------------------


def test_batch_errors_are_credited_to_their_simulations():
    model = Toy()
    sim = DecayingWave(size=8, n_steps=5)
    batch = {
        "params": torch.rand(12, 2) + torch.tensor([1.0, 0.1]),
        "t": torch.rand(12),
        "fields": torch.rand(12, 8) + 0.5,
        "sim_id": torch.tensor([3, 7, 3, 3, 9, 7, 9, 9, 9, 3, 7, 7]),
    }
    fake = SimpleNamespace(datamodule=SimpleNamespace(simulation=sim))
    cb = ActiveLearning(smoothing=0.5)
    with torch.no_grad():
        errors = relative_l2(model(batch["params"], batch["t"]), batch["fields"], sim.fields)[:, 0].numpy()
    ids = batch["sim_id"].numpy()
    cb._score_batch(fake, model, batch)
    for sim_id in (3, 7, 9):
        np.testing.assert_allclose(cb.scores[sim_id], errors[ids == sim_id].mean(), rtol=1e-12)
    # Second batch: a moving average, weight 0.5 on the newest value.
    first = dict(cb.scores)
    batch["fields"] = batch["fields"] * 2.0
    with torch.no_grad():
        errors2 = relative_l2(model(batch["params"], batch["t"]), batch["fields"], sim.fields)[:, 0].numpy()
    cb._score_batch(fake, model, batch)
    np.testing.assert_allclose(cb.scores[3], 0.5 * first[3] + 0.5 * errors2[ids == 3].mean(), rtol=1e-12)
    assert cb.state_dict() == {"scores": {str(k): v for k, v in cb.scores.items()}}


def test_snapshot_disagreement_is_zero_for_equal_snapshots_and_grows_with_their_spread():
    model = Toy()
    scorer = SnapshotDisagreement(n_snapshots=2, every_n_steps=1, n_times=2)
    batch = {"t": torch.tensor([0.2, 0.4, 0.2])}
    points = np.array([[1.2, 0.3], [1.8, 0.9]])
    assert not scorer.ready
    np.testing.assert_array_equal(scorer(points), np.zeros(2))  # no committee yet
    scorer.update(model, batch, step=1)
    scorer.update(model, batch, step=2)
    assert scorer.ready
    np.testing.assert_allclose(scorer(points), 0.0, atol=1e-12)  # two equal copies agree
    with torch.no_grad():
        model.lin.bias += 0.1
    scorer.update(model, batch, step=3)
    small = scorer(points)
    with torch.no_grad():
        model.lin.bias += 1.0
    scorer.update(model, batch, step=4)
    assert np.all(small > 0) and np.all(scorer(points) > 10 * small)
    # A snapshot is a copy: training the model afterwards does not change the scores.
    before = scorer(points)
    with torch.no_grad():
        model.lin.bias += 5.0
    np.testing.assert_array_equal(scorer(points), before)


def test_pacing_allowance_is_linear_then_the_whole_budget():
    pacing = SimulationPacing(n_initial=4, release_until=0.5)
    pacing.budget = 24
    assert [pacing.allowance(s, 100) for s in (0, 10, 25, 49, 50, 100)] == [4, 8, 14, 23, 24, 24]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ActiveLearning(every_n_steps=0), "every_n_steps"),
        (lambda: ActiveLearning(smoothing=0.0), "smoothing"),
        (lambda: SnapshotDisagreement(n_snapshots=1), "n_snapshots"),
        (lambda: SimulationPacing(n_initial=0), "n_initial"),
        (lambda: SimulationPacing(release_until=1.5), "release_until"),
    ],
)
def test_bad_arguments_raise_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_group_builds_both_callbacks_for_an_active_sampler():
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["callbacks=active_learning", "sampler=active_uncertainty"])
    callbacks = {name: instantiate(c) for name, c in cfg.callbacks.items()}
    assert isinstance(callbacks["active_learning"], ActiveLearning)
    assert isinstance(callbacks["active_learning"].uncertainty, SnapshotDisagreement)
    assert isinstance(callbacks["pacing"], SimulationPacing)
    sampler = instantiate(cfg.sampler)(space=instantiate(cfg.simulation).space)
    assert isinstance(sampler, ActiveSampler) and isinstance(sampler.acquisition, UncertaintyAcquisition)


# --- live training loops ----------------------------------------------------------------------


class LauncherSpy(L.Callback):
    """Records (step, simulations started) after every training batch."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        counts = trainer.datamodule.launcher.counts("train")
        self.started.append((trainer.global_step, sum(counts.values())))


def test_loss_driven_loop_tells_the_sampler_and_paces_the_launcher(tmp_path):
    # Acquisition from the 4th point told, at once (ramp 0): the 8 simulations before training are
    # told within the first tells, so every point drawn after them can be acquired. With
    # n_initial=8, ramp=4 a clean-clone CI run drew all 24 before the ramp had given a whole
    # point: a slot frees when a simulation ends, before that simulation is scored and told.
    sampler = ActiveSampler(DecayingWave().space, seed=0, acquisition=LossAcquisition(), n_initial=4, ramp=0)
    dm = make_datamodule(tmp_path, sampler)
    active, spy = ActiveLearning(tell_every_n_steps=5), LauncherSpy()
    # The budget is released by step 60, as at 120 steps with release_until=0.5, and training goes
    # on long after it: every simulation must arrive and be drawn before the last tell (at 120
    # steps the last ones sometimes arrived after it once the tiny model trained fast).
    pacing = SimulationPacing(n_initial=8, release_until=0.1)
    pacing.attach(dm)  # as gensim-train does: no training simulation starts ahead of the pacing
    try:
        trainer(tmp_path, [active, pacing, spy], max_steps=600).fit(tiny_model(), datamodule=dm)
    finally:
        dm.shutdown()
    records = dm.launcher.ledger.records
    train_ids = {i for i, r in records.items() if r.purpose == "train"}
    # Every training simulation was scored and told; the told points are exactly theirs.
    assert set(active.scores) == train_ids and len(train_ids) == BUDGET
    told = {tuple(u) for u in sampler.history().observed}
    assert told == {tuple(u) for u in sampler.space.to_unit(np.array([records[i].params for i in train_ids]))}
    assert sampler.n_acquired > 0  # the later simulations followed the scores
    # Pacing: never more started than allowed at that step (or than had started before pacing
    # could begin, while the held-out set was simulated), and the whole budget in the end.
    assert pacing.started_before <= 8  # attached: at most n_initial before training, whatever the load
    for step, started in spy.started:
        assert started <= pacing.allowance(step, 600)
    assert dm.launcher.counts("train")["done"] == BUDGET


def test_uncertainty_loop_supplies_the_score_function(tmp_path):
    sampler = ActiveSampler(
        DecayingWave().space,
        seed=0,
        acquisition=UncertaintyAcquisition(n_candidates=64),
        n_initial=8,
        ramp=0,
        max_fraction=1.0,
    )
    dm = make_datamodule(tmp_path, sampler)
    active = ActiveLearning(uncertainty=SnapshotDisagreement(n_snapshots=2, every_n_steps=10))
    pacing = SimulationPacing(n_initial=8, release_until=0.6)
    pacing.attach(dm)  # else cheap simulations may all start before the first snapshot can score
    try:
        trainer(tmp_path, [active, pacing]).fit(tiny_model(), datamodule=dm)
    finally:
        dm.shutdown()
    assert sampler.acquisition.score_fn is active.uncertainty
    assert sampler.n_acquired > 0


class BudgetLauncher:
    """The launcher API the callbacks use: a read-only ``budget``, ``set_budget``, ``counts`` and a
    ledger (the launcher's own tests check the real one)."""

    def __init__(self, budget: int, records: dict | None = None) -> None:
        self._budget = budget
        self.ledger = SimpleNamespace(records=records or {})

    @property
    def budget(self) -> int:
        return self._budget

    def set_budget(self, n: int) -> None:
        self._budget = int(n)

    def counts(self, purpose: str) -> dict[str, int]:
        return {"pending": 0, "running": 0, "done": 0, "failed": 0}


class IdleLauncher(BudgetLauncher):
    """What ranks other than 0 hold: a launcher object that must not be used."""

    def set_budget(self, n: int) -> None:
        raise AssertionError("only rank 0 may change the launcher's budget")


def fake_trainer(sampler=None, policy=None, max_steps=100, rank=0, launcher=None):
    """Just what the callbacks' setup reads: the data module's parts, trainer.max_steps and the rank."""
    sim = DecayingWave(size=8, n_steps=5)
    buffer = ReplayBuffer(16, sim.fields, 2, policy=policy or Reservoir())
    dm = SimpleNamespace(
        sampler=sampler or Sobol(sim.space, seed=0),
        simulation=sim,
        buffer=buffer,
        launcher=launcher or BudgetLauncher(BUDGET),
        watermark=40,
    )
    return SimpleNamespace(datamodule=dm, max_steps=max_steps, global_rank=rank, global_step=0)


def test_active_learning_needs_an_active_sampler():
    with pytest.raises(TypeError, match="sampler=active_loss"):
        ActiveLearning().setup(fake_trainer(), Toy(), "fit")


def test_pacing_lowers_the_budget_to_the_first_allowance_and_remembers_it():
    fake = fake_trainer()
    pacing = SimulationPacing(n_initial=8)
    pacing.setup(fake, Toy(), "fit")
    assert pacing.budget == BUDGET and fake.datamodule.launcher.budget == 8
    assert pacing.state_dict() == {"budget": BUDGET}


def test_attach_caps_the_launcher_before_the_data_module_starts_it():
    fake = fake_trainer()
    pacing = SimulationPacing(n_initial=8)
    pacing.attach(fake.datamodule)
    assert pacing.budget == BUDGET and fake.datamodule.launcher.budget == 8
    pacing.setup(fake, Toy(), "fit")  # the budget attach saw is kept, not the lowered one
    assert pacing.budget == BUDGET
    assert pacing.allowance(120, 120) == BUDGET


@pytest.mark.parametrize(
    "kwargs, match",
    [({"policy": FIFO()}, "buffer=reservoir"), ({"max_steps": -1}, "trainer.max_steps")],
)
def test_pacing_refuses_what_it_cannot_pace(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimulationPacing().setup(fake_trainer(**kwargs), Toy(), "fit")


def test_pacing_leaves_the_launcher_of_other_ranks_alone():
    fake = fake_trainer(rank=1, launcher=IdleLauncher(BUDGET))
    pacing = SimulationPacing(n_initial=8)
    pacing.setup(fake, Toy(), "fit")
    pacing.on_train_batch_start(fake, Toy(), None, 0)  # IdleLauncher raises if touched


class OnDevice(Toy):
    """A Toy that reports the meta device (a GPU stand-in) and records where its inputs are.

    Meta tensors hold no values, so it predicts from zeros of the inputs' shape on the host: the
    snapshots still differ by their biases, which is all a spread needs.
    """

    seen: list[str] = []

    @property
    def device(self) -> torch.device:
        return torch.device("meta")

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(params.device.type)
        return super().forward(torch.zeros(params.shape), torch.zeros(t.shape))


def test_snapshot_disagreement_feeds_the_snapshots_on_their_device():
    scorer = SnapshotDisagreement(n_snapshots=2, every_n_steps=1, n_times=2)
    model = OnDevice()
    scorer.update(model, {"t": torch.tensor([0.2, 0.4])}, step=1)
    with torch.no_grad():
        model.lin.bias += 0.1
    scorer.update(model, {"t": torch.tensor([0.2, 0.4])}, step=2)
    scores = scorer(np.array([[1.2, 0.3], [1.8, 0.9]]))
    assert OnDevice.seen == ["meta", "meta"] and scores.shape == (2,) and np.all(scores > 0)


# --- rank-aware active learning: a real 2-process gloo group ------------------------------------


class RecordingSampler:
    """An active sampler's ``tell``, recorded."""

    def __init__(self) -> None:
        self.told: list[tuple[np.ndarray, np.ndarray]] = []

    def tell(self, params: np.ndarray, scores: np.ndarray) -> None:
        self.told.append((params, scores))


N_STEPS, TELL_EVERY = 12, 5
#: Simulations streamed to each rank (each to one rank).
RANK_SIMS = {0: [0, 1, 4], 1: [2, 3]}


def rank_batch(rank: int, step: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s training batch at ``step`` (seeded), its samples from the rank's simulations."""
    gen = torch.Generator().manual_seed(100 * rank + step)
    sims = torch.tensor(RANK_SIMS[rank])
    return {
        "params": torch.rand(6, 2, generator=gen) + torch.tensor([1.0, 0.1]),
        "t": torch.rand(6, generator=gen),
        "fields": torch.rand(6, 8, generator=gen) + 0.5,
        "sim_id": sims[torch.randint(0, len(sims), (6,), generator=gen)],
    }


def ledger() -> dict[int, SimpleNamespace]:
    return {i: SimpleNamespace(purpose="train", params=[1.0 + i, 0.1 * i]) for i in range(5)}


def _active_learning_worker(rank: int) -> dict:
    sampler = RecordingSampler() if rank == 0 else None  # rank 0 owns the sampler and the launcher
    launcher = BudgetLauncher(BUDGET, ledger()) if rank == 0 else IdleLauncher(BUDGET)
    fake = fake_trainer(sampler=sampler, rank=rank, launcher=launcher)
    fake.datamodule.sampler = sampler
    callback = ActiveLearning(tell_every_n_steps=TELL_EVERY, smoothing=0.5)
    callback.setup(fake, Toy(), "fit")
    model = Toy()
    for step in range(N_STEPS):
        fake.global_step = step
        callback.on_train_batch_end(fake, model, None, rank_batch(rank, step), step)
    return {"scores": callback.scores, "told": sampler.told if sampler else None}


def expected_scores(rank: int, until: int) -> dict[int, float]:
    """One process's moving averages of rank ``rank``'s simulations after steps < ``until``."""
    callback, model = ActiveLearning(smoothing=0.5), Toy()
    fake = SimpleNamespace(datamodule=SimpleNamespace(simulation=DecayingWave(size=8, n_steps=5)))
    for step in range(until):
        callback._score_batch(fake, model, rank_batch(rank, step))
    return callback.scores


@pytest.mark.slow
def test_scores_of_every_rank_reach_rank_zeros_sampler(tmp_path):
    results = run_ranks(_active_learning_worker, tmp_path)
    told = results[0]["told"]
    # Tells at steps 0, 5 and 10, each with the simulations scored since the last one on any rank.
    assert len(told) == 3
    records = ledger()
    for (params, scores), until in zip(told, (1, 6, 11)):
        expected = expected_scores(0, until) | expected_scores(1, until)
        ids = [int(round(p[0] - 1.0)) for p in params]
        assert ids == sorted(ids) and all(np.array_equal(records[i].params, p) for i, p in zip(ids, params))
        np.testing.assert_allclose(scores, [expected[i] for i in ids], rtol=1e-12)
    assert {int(round(p[0] - 1.0)) for p in told[1][0]} == {0, 1, 2, 3, 4}  # both ranks' simulations
    # Rank 0 keeps every simulation's score as of the last tell (its checkpoint); rank 1 its own.
    assert set(results[0]["scores"]) == {0, 1, 2, 3, 4} and set(results[1]["scores"]) == set(RANK_SIMS[1])
