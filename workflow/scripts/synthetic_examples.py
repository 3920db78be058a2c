"""Rule synthetic_examples: a figure of example images beside their labels, per task."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.figures import save_figure
from grainflow.figures.synthetic import synthetic_examples
from grainflow.io.hdf5 import read_specimen

n = snakemake.params.per_task
samples = {}
for task in ("grains", "phases", "nanoparticles", "kernels"):
    chosen = []
    for path in snakemake.input[task]:
        f = read_specimen(path)
        # one image per session, so that the modalities are shown
        chosen += [s for s in f.samples if s.image_id.endswith("i00")] or f.samples[:1]
    samples[task] = (
        chosen[:n] if task != "kernels" else read_specimen(snakemake.input[task][0]).samples[:n]
    )
save_figure(synthetic_examples(samples), snakemake.output.fig)
