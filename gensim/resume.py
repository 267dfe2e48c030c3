"""Resume a study from its run directory: ``gensim-train resume=<run dir>``.

A resumed study continues *in the same run directory*: checkpoints, worker logs, the ledger
(``simulations.json``), the CSV logs and ``metrics.json`` go where the first run put them. Its
config is the first run's (``.hydra/config.yaml``, with the Hydra interpolations it had,
e.g. ``study``, resolved as they were); plain ``key=value`` overrides on the resume command line
change existing keys (say ``trainer.max_steps=12000`` to train longer), while config group
choices (``model=cvae``) cannot change. The resume command's own Hydra record goes to
``.hydra-resume/`` so the first run's ``.hydra/`` stays intact.

What is restored, before any simulation starts (:func:`restore`):

- model, normalizers, optimizer, scheduler, global step and callbacks' state (by Lightning,
  from ``checkpoints/last.ckpt``); ``trainer.max_steps`` is the total, not additional;
- sampler (the design continues where it stopped), launcher ledger: finished and failed
  simulations are never run again, those pending or running at the checkpoint are queued
  again with their parameters and seed (:meth:`gensim.launch.Launcher.load_state_dict`);
- the held-out set (not simulated again) and, per rank, the replay buffer, the trivial
  predictor's sums and the (simulation, step) pairs taken: a rerun simulation's steps that
  were taken before the checkpoint are dropped, so none enters a buffer twice.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gensim.callbacks.checkpointing import CHECKPOINT_KEY, load_state, saved_steps, stream_files, tensors_to_arrays

log = logging.getLogger("gensim.resume")

#: Hydra's record of a resume command, beside the first run's ``.hydra``.
RESUME_HYDRA_SUBDIR = ".hydra-resume"


def check_run_dir(run_dir: str | Path) -> Path:
    """The last checkpoint of a study's run directory; a clear error when it cannot be resumed.

    Parameters
    ----------
    run_dir : str or Path
        The ``hydra.run.dir`` of the study to continue.

    Returns
    -------
    Path
        ``run_dir/checkpoints/last.ckpt``.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a directory, has no ``.hydra/config.yaml`` (not a gensim-train
        run directory) or no checkpoint yet.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"resume={run_dir}: no such directory; pass the run directory of the study to "
            "continue (its hydra.run.dir, e.g. outputs/heat2d/2026-01-01_12-00-00)"
        )
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise FileNotFoundError(
            f"resume={run_dir}: no .hydra/config.yaml there, so it is not the run directory "
            "of a gensim-train study; pass the folder that holds .hydra/ and checkpoints/"
        )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"resume={run_dir}: no checkpoints/last.ckpt; the study stopped before its first "
            "checkpoint (checkpoint.every_n_steps / checkpoint.every_minutes): start it again"
        )
    return ckpt


def _run_dir_resolver(resume: str | None, default: str) -> str:
    """``hydra.run.dir``: the resumed study's directory, or the default of a new study."""
    if resume is None:
        return default
    check_run_dir(resume)  # before Hydra creates a directory for a mistyped path
    return str(resume)


def _hydra_subdir_resolver(resume: str | None) -> str:
    return ".hydra" if resume is None else RESUME_HYDRA_SUBDIR


def register_resolvers() -> None:
    """The resolvers ``conf/train.yaml`` uses for ``hydra.run.dir`` and ``hydra.output_subdir``."""
    for name, fn in (("gensim_run_dir", _run_dir_resolver), ("gensim_hydra_subdir", _hydra_subdir_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def load_run_config(run_dir: str | Path, overrides: list[str] = ()) -> DictConfig:
    """The resolved config of the study in ``run_dir``, with command-line ``overrides`` applied.

    ``${hydra:...}`` interpolations are resolved from that run's ``.hydra/hydra.yaml``, not from
    the resume command's Hydra (which, without the first run's group choices, would differ).

    Parameters
    ----------
    run_dir : str or Path
    overrides : list of str
        Hydra overrides of the resume command (``hydra.overrides.task``); ``resume=`` is skipped.

    Raises
    ------
    ValueError
        For an override that adds, deletes, or changes a config group or an unknown key.
    """
    run_dir = Path(run_dir)
    text = (run_dir / ".hydra" / "config.yaml").read_text()
    saved_hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
    # ${hydra:a.b} -> ${_saved_hydra.a.b}: the first run's values.
    cfg = OmegaConf.create(re.sub(r"\$\{hydra:", "${_saved_hydra.", text))
    cfg["_saved_hydra"] = {"runtime": OmegaConf.to_container(saved_hydra.runtime, resolve=False)}
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    del cfg["_saved_hydra"]
    if "checkpoint" not in cfg:
        raise ValueError(
            f"{run_dir} was written by a gensim-train without resumable checkpoints (no "
            "checkpoint.* in its .hydra/config.yaml); start the study again"
        )
    _apply_overrides(cfg, list(overrides), groups=set(saved_hydra.runtime.choices.keys()))
    cfg.resume = str(run_dir)
    return cfg


def _apply_overrides(cfg: DictConfig, overrides: list[str], groups: set[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume":
            continue
        if override.is_add() or override.is_delete() or override.is_force_add() or key in groups:
            raise ValueError(
                f"{override.input_line}: a resumed study keeps its config; only existing keys can "
                "be changed (key=value, e.g. trainer.max_steps=12000), not config groups or +/~ keys"
            )
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ValueError(
                f"{override.input_line}: the resumed study's config has no key {key!r}; "
                f"see {cfg.get('resume') or 'its .hydra/config.yaml'}"
            )
        OmegaConf.update(cfg, key, override.value(), merge=False)


def restore(ckpt_path: str | Path, datamodule, rank: int) -> dict:
    """Restore the study state of a checkpoint into a data module, before ``trainer.fit``.

    Lightning restores the rest (model, optimizer, loops, callbacks) when ``fit`` gets
    ``ckpt_path``; the data module's part must come first, since ``setup`` starts the
    simulations.

    Parameters
    ----------
    ckpt_path : str or Path
        ``<run dir>/checkpoints/last.ckpt``.
    datamodule : StreamingDataModule
        Not set up yet.
    rank : int
        This process's global rank: it restores its own replay buffer.

    Returns
    -------
    dict
        ``global_step``, ``world_size`` and ``buffer`` (restored or not) of the checkpoint.
    """
    ckpt_path = Path(ckpt_path)
    # Our own file, with numpy arrays and plain objects: not a weights-only checkpoint.
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    name = type(datamodule).__qualname__
    if name not in ckpt or CHECKPOINT_KEY not in ckpt:
        raise ValueError(
            f"{ckpt_path} holds no study state ({name}, {CHECKPOINT_KEY}); it was not written "
            "by a gensim-train that can resume; start the study again"
        )
    datamodule.load_state_dict(ckpt[name])
    study = ckpt[CHECKPOINT_KEY]
    if study.get("heldout") is not None:
        datamodule.load_heldout_state_dict(tensors_to_arrays(study["heldout"]))
    step, world = int(study["stream_step"]), int(study["world_size"])
    directory = ckpt_path.parent / "stream"
    own = stream_files(directory, rank, step)
    if not own[1].is_file():
        raise FileNotFoundError(
            f"{own[1]} is missing: the stream state of rank {rank} at step {step}, saved beside "
            f"{ckpt_path}; resume with the {world} trainer ranks the study had, from an "
            "intact run directory"
        )
    state = load_state(own[1])
    state["buffer"] = load_state(own[0]) if study["buffer"] else None
    others = [load_state(stream_files(directory, r, step)[1])["delivered"] for r in range(world) if r != rank]
    datamodule.load_stream_state_dict(state, others)
    # Stream files of later steps are a save the killed run made but never completed with its
    # last.ckpt: the resumed run writes those steps again, and rank 0 must not take the stale
    # ones for the new (StudyCheckpoint.wait_for_peers).
    for later in (s for s in saved_steps(directory, rank) if s > step):
        for path in stream_files(directory, rank, later):
            path.unlink(missing_ok=True)
    log.info(
        "resuming from %s at step %d (buffer %s, held-out set %s)",
        ckpt_path,
        int(ckpt["global_step"]),
        "restored" if study["buffer"] else "refilled by the stream",
        "restored" if study.get("heldout") is not None else "simulated again",
    )
    return {"global_step": int(ckpt["global_step"]), "world_size": world, "buffer": bool(study["buffer"])}
