"""Print the tables of reports/models/README.md from the runs' metrics.json (python reports/models/table.py)."""

import json
from pathlib import Path

RUNS = Path(__file__).parent / "runs"
ORDER = [
    "det3k",
    "detlog3k",
    "pod3k_t",
    "pod3k",
    "pod3k_m128",
    "pod3k_fixed",
    "detlog6k",
    "pod6k",
    "detlog20k",
    "traj6k",
    "traj6k_plain",
    "pod6k_lin",
    "traj20k",
    "pod20k_lin",
    "pod512_lin",
    "pod512_lin_rerun",
    "pod512_lin_norefit",
    "pod512_lin_96k",
    "pod512_lin_96k_plain",
    "traj512",
    "conv6k",
    "conv3k_l8",
    "burgers128_podlin",
    "burgers512_det",
    "burgers512_podlin",
    "burgers512_podlin_s1",
    "burgers512_podlin_s2",
    "burgers128_det",
    "burgers128_traj",
    "burgers128_pod",
    "burgers128_podlin_h64",
    "burgers128_podlin_wd01",
    "burgers128_podlin_wd1",
    "burgers128_podlin_wd3",
    "burgers128_pod_wd1",
    "burgers128_podlin_wd1_s1",
    "burgers128_podlin_wd1_s2",
    "burgers128_pod_wd1_s1",
    "burgers128_pod_wd1_s2",
    "burgers512_podlin_wd1",
    "burgers512_pod_wd1",
]
#: The study's overrides, left out of the table (another budget shows).
STUDY = {"simulation=heat2d", "simulation.grid=32", "launcher.max_simulations=128", "seed=0"}
#: Kriging (reports/models/kriging.py) on the simulations of a study.
KRIGING = [
    "kriging128",
    "kriging512",
    "burgers128_kriging",
    "burgers512_kriging",
    "burgers512_kriging_s1",
    "burgers512_kriging_s2",
    "burgers128_kriging_s1",
    "burgers128_kriging_s2",
]

print("| run | model overrides | steps | held-out mean | held-out p99 | training mean | training / held-out |")
print("|---|---|---|---|---|---|---|")
for name in ORDER:
    if not (RUNS / name / "metrics.json").is_file():
        continue
    m = json.loads((RUNS / name / "metrics.json").read_text())
    overrides = [o.strip("- \n") for o in (RUNS / name / "overrides.yaml").read_text().splitlines()]
    overrides = [o for o in overrides if o not in STUDY]
    print(
        f"| {name} | `{' '.join(overrides)}` | {m['steps_per_rank'][0]} | {m['val_rel_l2_mean']:.3g} | "
        f"{m['val_rel_l2_p99']:.3g} | {m['train_rel_l2_mean']:.3g} | "
        f"{m['train_rel_l2_mean'] / m['val_rel_l2_mean']:.2f} |"
    )
print()
print("| run | study overrides | POD modes | held-out mean | held-out p99 | fit time (s) |")
print("|---|---|---|---|---|---|")
for name in KRIGING:
    if not (RUNS / name / "metrics.json").is_file():
        continue
    m = json.loads((RUNS / name / "metrics.json").read_text())
    print(
        f"| {name} | `{' '.join(m['study_overrides'][:4])}` | {m['n_components_']} | {m['val_rel_l2_mean']:.6f} | "
        f"{m['val_rel_l2_p99']:.6f} | {m['fit_s']:.1f} |"
    )
