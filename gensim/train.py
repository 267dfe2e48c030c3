"""``gensim-train``: one on-line training study, configured by Hydra (``conf/train.yaml``).

Example::

    gensim-train simulation.grid=32 launcher.n_parallel=4 trainer.max_steps=500 hydra.run.dir=out/run1
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import json
import logging
import signal
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gensim import resume as resuming
from gensim.callbacks import EnsembleProgressBar, StopWhenStreamExhausted, TrainingThroughput, WallClock
from gensim.callbacks.checkpointing import checkpoint_callbacks
from gensim.config_checks import ConfigError, check_config
from gensim.data.streaming import rows_per_chunk
from gensim.metrics import relative_l2, summarize_errors
from gensim.study_logger import study_logger

log = logging.getLogger("gensim.train")

# conf/train.yaml's hydra.run.dir and hydra.output_subdir use them; Hydra resolves those after
# importing this module.
resuming.register_resolvers()


@torch.no_grad()
def evaluate(model, datamodule, device: torch.device | str = "cpu") -> dict[str, float]:
    """Held-out relative L2 of the model and of the trivial predictor (the training mean field).

    Predictions run on ``device`` (the training device) in chunks of about 32 MiB of fields
    (:func:`gensim.data.streaming.rows_per_chunk`), so the peak memory of the evaluation does not
    grow with the held-out set; only the errors come back to the host. A model may add its own
    held-out metrics (distribution metrics of a generative model, say) through an optional method
    ``heldout_metrics(validation_tensors, datamodule) -> dict``.

    Returns
    -------
    dict
        ``val_rel_l2_mean``, ``val_rel_l2_p99``, ``trivial_rel_l2_mean``, ``trivial_rel_l2_p99``,
        and the model's own.
    """
    model.to(device).eval()
    val = datamodule.validation_tensors()
    extra = model.heldout_metrics(val, datamodule) if hasattr(model, "heldout_metrics") else {}
    fields = datamodule.simulation.fields
    mean_field = torch.from_numpy(datamodule.stream_mean.mean()).to(device)
    ours, trivial = [], []
    chunk = rows_per_chunk(val["fields"].shape[1])
    for p, t, y in zip(*(val[k].split(chunk) for k in ("params", "t", "fields"))):
        y = y.to(device)
        ours.append(relative_l2(model(p.to(device), t.to(device)), y, fields).cpu())
        trivial.append(relative_l2(mean_field.expand_as(y), y, fields).cpu())
    ours_s, trivial_s = summarize_errors(torch.cat(ours)), summarize_errors(torch.cat(trivial))
    return {
        "val_rel_l2_mean": ours_s["mean"],
        "val_rel_l2_p99": ours_s["p99"],
        "trivial_rel_l2_mean": trivial_s["mean"],
        "trivial_rel_l2_p99": trivial_s["p99"],
        **extra,
    }


def study_checkpoints(checkpoint: DictConfig, run_dir: Path) -> list:
    """The checkpoint callbacks of the ``checkpoint`` config group, writing into ``run_dir/checkpoints``."""
    if "_target_" not in checkpoint:
        # The config of a study started before checkpoint became a config group (a resume): the
        # same block, without the factory's name.
        return checkpoint_callbacks(run_dir, **checkpoint)
    return instantiate(checkpoint)(run_dir)


def scheduled_max_steps(cfg: DictConfig) -> int:
    """``trainer.max_steps``, or ``schedule.steps_per_simulation x launcher.max_simulations`` when set."""
    per_simulation = OmegaConf.select(cfg, "schedule.steps_per_simulation")
    if per_simulation is None:
        return int(cfg.trainer.max_steps)
    return int(per_simulation) * int(cfg.launcher.max_simulations)


def normalizer_digest(model) -> str:
    """A short digest of the model's frozen normalizer statistics (equal on every rank when merged)."""
    digest = hashlib.sha1()
    for name, buf in sorted(model.state_dict().items()):
        if "_norm." in name:
            digest.update(name.encode() + buf.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def rank_stats(trainer, model, datamodule, throughput: TrainingThroughput) -> list[dict]:
    """Every rank's stream and training counters, in rank order (a collective: all ranks call it).

    As a side effect, rank 0's trivial predictor becomes the mean over every rank's stream.
    """
    stats = datamodule.receiver.stats()
    mine = {
        "rank": datamodule.ranks.rank,
        "samples_received": stats.accepted,
        "samples_rejected": stats.n_rejected,
        "train_samples": throughput.samples,
        "train_seconds": throughput.seconds,
        "steps": int(trainer.global_step),
        "normalizer_digest": normalizer_digest(model),
        "buffer": datamodule.buffer.stats(),
        "duplicates_dropped": datamodule.delivered.n_duplicates,
    }
    mine["stream_sum"], mine["stream_count"] = datamodule.stream_mean.totals()
    # What each simulation's messages became, for Launcher.check_streams on rank 0.
    mine["per_sim"] = {
        "accepted_per_sim": stats.accepted_per_sim,
        "finished": sorted(stats.finished),
        "rejected_per_sim": stats.rejected_per_sim,
        "rejection_details": stats.rejection_details,
    }
    everyone = datamodule.ranks.gather_objects(mine)
    datamodule.stream_mean.sum = np.sum([r.pop("stream_sum") for r in everyone], axis=0)
    datamodule.stream_mean.count = sum(r.pop("stream_count") for r in everyone)
    return everyone


def study_metrics(datamodule, ranks: list[dict], wall_s: float) -> dict:
    """Ensemble, stream and throughput counters of a finished study, summed over ranks."""
    launcher = datamodule.launcher
    train = launcher.counts("train")
    failed = [r for r in launcher.ledger.records.values() if r.state == "failed"]
    local = datamodule.receiver.stats()
    seconds = max(r["train_seconds"] for r in ranks)
    heldout = datamodule.validation_tensors()
    samples = sum(r["train_samples"] for r in ranks)
    # Held-out simulations stream to rank 0 only: their samples are taken out of its count, so
    # that samples_received counts training samples (a resume that restored the held-out set
    # from its checkpoint received none).
    heldout_received = datamodule.heldout_samples_received(local)
    received = [r["samples_received"] for r in ranks]
    received[0] -= heldout_received
    return {
        "simulations_started": sum(train[s] for s in ("running", "done", "failed", "cancelled")),
        "simulations_finished": train["done"],
        "simulations_failed": train["failed"],
        "simulations_cancelled": train["cancelled"],
        # Budgeted training simulations never started: training ended first (item of the summary).
        "simulations_not_run": launcher.unstarted,
        "simulations_budget": launcher.budget,
        "failed_simulations": [{"sim_id": r.sim_id, "purpose": r.purpose, "error": r.error} for r in failed],
        "validation_simulations": sum(datamodule.launcher.counts("validation").values()),
        "samples_received": sum(received),  # training samples; held-out ones below
        "heldout_samples_received": heldout_received,
        "samples_rejected": sum(r["samples_rejected"] for r in ranks),
        "samples_rejected_by_reason": dict(local.rejected),  # rank 0's receiver
        # Valid MESH messages per field on a mesh (rank 0's receiver): one per worker process.
        "meshes_verified": dict(datamodule.receiver.meshes_verified),
        # (simulation, step) pairs that arrived again (a rerun after a resume) and were not taken twice.
        "samples_duplicate_dropped": sum(r["duplicates_dropped"] for r in ranks),
        "train_samples": samples,
        "train_samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "wall_s": wall_s,
        "heldout_samples": len(heldout["t"]),
        "heldout_bytes": sum(v.numel() * v.element_size() for v in heldout.values()),
        "world_size": len(ranks),
        "samples_received_per_rank": received,
        "train_samples_per_rank": [r["train_samples"] for r in ranks],
        "steps_per_rank": [r["steps"] for r in ranks],
        "normalizer_digest_per_rank": [r["normalizer_digest"] for r in ranks],
        "buffer": ranks[0]["buffer"],
        "buffer_per_rank": [r["buffer"] for r in ranks],
    }


#: Failed simulations listed one by one in the summary (all are in simulations.json).
MAX_FAILED_LISTED = 10


def print_summary(metrics: dict, run_dir: Path) -> None:
    """One screen of results at the end of a study."""
    lines = [
        "",
        "=" * 64,
        f" gensim study finished in {metrics['wall_s']:.1f} s  ->  {run_dir}",
        "-" * 64,
        f" held-out relative L2   mean {metrics['val_rel_l2_mean']:.4f}   p99 {metrics['val_rel_l2_p99']:.4f}",
        f" trivial predictor      mean {metrics['trivial_rel_l2_mean']:.4f}   p99 {metrics['trivial_rel_l2_p99']:.4f}",
        *(
            [
                f" training rel. L2       mean {metrics['train_rel_l2_mean']:.4f}   p99 {metrics['train_rel_l2_p99']:.4f}"
                f"   ({metrics['train_probe_rows']} training rows)"
            ]
            if "train_rel_l2_mean" in metrics
            else []
        ),
        f" simulations            {metrics['simulations_started']} started, {metrics['simulations_finished']} done,"
        f" {metrics['simulations_failed']} failed (+{metrics['validation_simulations']} held-out)",
        f" samples                {metrics['samples_received']} training received"
        f" (+{metrics['heldout_samples_received']} held-out), {metrics['samples_rejected']} rejected",
        f" training               {metrics['train_samples']} samples, {metrics['train_samples_per_s']:.0f} samples/s",
    ]
    for r in metrics["failed_simulations"][:MAX_FAILED_LISTED]:
        lines.append(f" FAILED {r['purpose']} simulation {r['sim_id']}: {r['error']}"[:2000])
    if len(metrics["failed_simulations"]) > MAX_FAILED_LISTED:
        lines.append(
            f" ... and {len(metrics['failed_simulations']) - MAX_FAILED_LISTED} more failed: see simulations.json"
        )
    cut = metrics["simulations_not_run"] + metrics["simulations_cancelled"]
    if cut:
        lines.append(
            f" WARNING: training ended before the budget was simulated: {metrics['simulations_not_run']} of "
            f"{metrics['simulations_budget']} never ran, {metrics['simulations_cancelled']} cancelled mid-run; "
            "callbacks=until_budget trainer.max_steps=-1 trains until all have streamed"
        )
    if metrics["world_size"] > 1:
        lines.append(
            f" per rank               received {metrics['samples_received_per_rank']}, "
            f"trained {metrics['train_samples_per_rank']}, steps {metrics['steps_per_rank']}"
        )
    lines.append("=" * 64)
    print("\n".join(lines), flush=True)


def run(cfg: DictConfig, run_dir: Path, ckpt_path: Path | None = None) -> dict:
    """Run one study and return its metrics (also written to ``run_dir/metrics.json`` by rank 0).

    Under a distributed trainer every rank runs this function; rank 0 alone runs the ensemble,
    writes the outputs and returns the metrics, the other ranks return an empty dict.

    Parameters
    ----------
    cfg : DictConfig
        The study's config (``conf/train.yaml``).
    run_dir : Path
        Where everything is written.
    ckpt_path : Path, optional
        Continue the study of this checkpoint (see :mod:`gensim.resume`).
    """
    start = time.perf_counter()
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)

    simulation = instantiate(cfg.simulation)
    launcher = instantiate(cfg.launcher)(
        simulation=OmegaConf.to_container(cfg.simulation, resolve=True), log_dir=str(run_dir / "workers")
    )
    datamodule = instantiate(cfg.data)(
        simulation=simulation,
        sampler=instantiate(cfg.sampler)(space=simulation.space),
        launcher=launcher,
        buffer=instantiate(cfg.buffer),
        receiver=instantiate(cfg.transport),
        seed=cfg.seed,
    )
    model = instantiate(cfg.model)(fields=simulation.fields, n_params=simulation.space.dim)
    throughput = TrainingThroughput()
    # Extra callbacks come from the config group conf/callbacks (a name -> callback mapping).
    extra_callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # Callbacks that must act before the data module starts the simulations (SimulationPacing).
    for callback in extra_callbacks:
        if hasattr(callback, "attach"):
            callback.attach(datamodule)
    trainer = instantiate(cfg.trainer)(
        default_root_dir=str(run_dir),
        max_steps=scheduled_max_steps(cfg),
        logger=study_logger(cfg.get("logger"), run_dir, resumed=ckpt_path is not None),
        # Redraw at every step on a terminal; every 50 steps into a log file or CI output.
        callbacks=[
            EnsembleProgressBar(refresh_rate=1 if sys.stdout.isatty() else 50),
            throughput,
            StopWhenStreamExhausted(),
            WallClock(start),
            *study_checkpoints(cfg.checkpoint, run_dir),
            *extra_callbacks,
        ],
    )
    if ckpt_path is not None:
        resumed = resuming.restore(ckpt_path, datamodule, rank=trainer.global_rank)
        if resumed["world_size"] != trainer.world_size:
            raise ValueError(
                f"{ckpt_path} was saved by {resumed['world_size']} trainer ranks, this study has "
                f"{trainer.world_size}; resume with the same trainer.devices and trainer.num_nodes"
            )
    try:
        # weights_only=False: the checkpoint holds the study state (numpy arrays, plain objects)
        # next to the weights, and it is this study's own file.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
        if trainer.interrupted:
            raise KeyboardInterrupt
        # The final state, whatever the periodic triggers: a finished study can be continued
        # (resume=<run dir> trainer.max_steps=<more>). A collective: every rank saves its stream.
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        ranks = rank_stats(trainer, model, datamodule, throughput)
        # The training error beside the held-out one (train_rel_l2_*): a collective, every rank.
        trained = model.training_metrics() if hasattr(model, "training_metrics") else {}
        if trainer.global_rank != 0:
            return {}
        launcher.check_streams([r.pop("per_sim") for r in ranks])
        metrics = evaluate(model, datamodule, device=trainer.strategy.root_device) | trained
    finally:
        datamodule.shutdown()
        if trainer.global_rank == 0:
            launcher.ledger.write_json(run_dir / "simulations.json")
        # Every collective is done. A rank that exits with its process group alive can abort
        # in the group's thread destructors ("terminate called without an active exception",
        # exit 134 of a rank under srun in CI); Lightning's teardown leaves the group up.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    metrics |= study_metrics(datamodule, ranks, time.perf_counter() - start)
    # Extra callbacks may report study-level numbers too (BufferStats: the buffer's divergence).
    for callback in extra_callbacks:
        if hasattr(callback, "study_metrics"):
            metrics |= callback.study_metrics()
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_summary(metrics, run_dir)
    return metrics


#: Allocations at least this large come straight from mmap and go back to the system when freed.
MMAP_THRESHOLD_BYTES = 4 * 2**20


def release_large_arrays_at_free() -> None:
    """Make glibc return large freed arrays (batches, float64 temporaries) to the system at once.

    glibc raises its mmap threshold after each large free (up to 32 MiB by default), so later
    batch-sized arrays come from its heap, and freed ones stay resident. A study allocates such
    arrays at every step: on a 256 x 256 study the peak RSS was 0.2 GiB lower with the threshold
    fixed (reports/scaleout/memory.md). Below the threshold (received messages of ordinary
    fields) nothing changes. A no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_MMAP_THRESHOLD = -3  # from <malloc.h>; setting it also turns off the dynamic adjustment
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


@hydra.main(version_base="1.3", config_path="pkg://gensim.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the run directory is Hydra's output directory."""
    release_large_arrays_at_free()
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck study waits for.
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    # SIGTERM (a scheduler's or `kill`'s) ends the study like Ctrl-C does: through the `finally`
    # that stops every simulation process, instead of leaving them to finish their current run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt = None
    try:  # usage errors, before anything starts: the message says it all, a traceback would bury it
        if cfg.get("ckpt_path") is not None:  # the natural guess, silently ignored before
            raise ConfigError(
                "ckpt_path is not a gensim-train option; continue a study with "
                "resume=<its run directory> (it reads checkpoints/last.ckpt there)"
            )
        if cfg.get("resume") is not None:
            ckpt = resuming.check_run_dir(cfg.resume)
            if run_dir.resolve() != Path(cfg.resume).resolve():
                raise ConfigError(
                    f"resume={cfg.resume} writes into that run directory; do not set hydra.run.dir ({run_dir}) with it"
                )
            cfg = resuming.load_run_config(cfg.resume, list(HydraConfig.get().overrides.task))
        check_config(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"gensim-train: {err}", file=sys.stderr)
        sys.exit(2)
    run(cfg, run_dir, ckpt_path=ckpt)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
