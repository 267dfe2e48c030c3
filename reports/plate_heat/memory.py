"""Memory of one training step of the neural field against the number of mesh nodes.

For each mesh (``plate_with_holes(h)``, a small one and one of more than 100k nodes) a fresh
process builds ``model=neural_field`` (conf/model/neural_field.yaml) for PlateHeat's field on
that mesh, makes a batch of ``batch_size`` random fields (the batch the data module would
deliver: B x N values, held by the buffer whatever the model), runs warm-up steps, then
measures over ``steps`` training steps (forward, backward, AdamW):

- ``saved_bytes``: bytes of the tensors autograd saves for the backward pass (the activations,
  exact, via ``torch.autograd.graph.saved_tensors_hooks``), the largest over the steps;
- ``rss_growth_bytes``: growth of the peak resident set size (``ru_maxrss``) during the measured
  steps, beyond what the process held after building the batch and the warm-up steps;
- ``parameters``: the model's parameter count.

The deterministic MLP (one output per node, conf/model/deterministic.yaml) is measured beside
it, on the same meshes: its last layer, and so its step, grows with N.

Usage: ``OMP_NUM_THREADS=1 python reports/plate_heat/memory.py`` writes ``memory.json`` and
``memory.md`` next to this file.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Mesh spacings: 882 nodes and 126,837 nodes.
SPACINGS = (0.05, 0.004)
MODELS = ("neural_field", "deterministic")
BATCH_SIZE = 128  # conf/data/streaming.yaml's batch_size
WARMUP_STEPS, STEPS = 3, 5


def measure(model_name: str, h: float) -> dict:
    """One (model, mesh) measurement, in this process (run it in a fresh one)."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from gensim.simulations import FieldMesh, FieldSpec
    from gensim.simulations.meshes import plate_with_holes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mesh = plate_with_holes(h)
    spec = FieldSpec("temperature", (len(mesh.nodes),), "float32", FieldMesh(mesh.nodes, mesh.cells))
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model_name}", "model.normalizer_warmup_batches=1"])
    model = instantiate(cfg.model)(fields=[spec], n_params=5)
    model.log = lambda *args, **kwargs: None  # no trainer attached
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = {
        "params": torch.rand(BATCH_SIZE, 5),
        "t": torch.rand(BATCH_SIZE),
        "fields": torch.randn(BATCH_SIZE, spec.size),
    }
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    def step(i: int) -> int:
        saved[0] = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return saved[0]

    for i in range(WARMUP_STEPS):
        step(i)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    saved_max = max(step(WARMUP_STEPS + i) for i in range(STEPS))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": model_name,
        "h": h,
        "nodes": spec.size,
        "batch_bytes": BATCH_SIZE * spec.size * 4,
        "parameters": sum(p.numel() for p in model.parameters()),
        "saved_bytes": saved_max,
        "rss_growth_bytes": rss_after - rss_before,
        "peak_rss_bytes": rss_after,
    }


def main() -> None:
    results = []
    for model_name in MODELS:
        for h in SPACINGS:
            out = subprocess.run(
                [sys.executable, __file__, model_name, str(h)], check=True, capture_output=True, text=True
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    (HERE / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
    mib = 2**20
    lines = [
        "# Memory of a training step against the mesh size (plate_heat)",
        "",
        f"Command: `OMP_NUM_THREADS=1 python reports/plate_heat/memory.py` (batch of {BATCH_SIZE} fields, "
        f"{WARMUP_STEPS} warm-up steps, then the largest over {STEPS} steps; each row a fresh process).",
        "",
        "| model | nodes N | batch B x N (MiB) | parameters | saved activations (MiB) | peak RSS growth over "
        "the steps (MiB) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['nodes']:,} | {r['batch_bytes'] / mib:.1f} | {r['parameters']:,} | "
            f"{r['saved_bytes'] / mib:.2f} | {r['rss_growth_bytes'] / mib:.1f} | "
            f"{r['peak_rss_bytes'] / mib:.0f} |"
        )
    by = {(r["model"], r["nodes"]): r for r in results}
    small, large = sorted({r["nodes"] for r in results})
    ratio = {m: by[(m, large)]["saved_bytes"] / by[(m, small)]["saved_bytes"] for m in MODELS}
    lines += [
        "",
        f"Saved activations, {large:,} nodes over {small:,} nodes ({large / small:.0f} times the nodes): "
        + ", ".join(f"{m} {ratio[m]:.2f}x" for m in MODELS)
        + ".",
        "",
        "The neural field's step reads the values of `nodes_per_sample` random nodes of each field: its "
        "activations and parameters do not depend on N. The batch itself (B x N values) is what the data "
        "module delivers to any model; the RSS growth counts what the steps allocate beyond it.",
    ]
    (HERE / "memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], float(sys.argv[2]))))
    else:
        main()
