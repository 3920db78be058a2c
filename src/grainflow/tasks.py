"""What differs between the segmentation tasks, in one table.

Code asks this table (``TASKS[task].score``) instead of testing
``task == "grains"``. The diffraction task classifies whole patterns and has
its own table of classes in :mod:`grainflow.diffraction.crystal`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "Task",
    "TASKS",
    "SEGMENTATION",
    "CLASS_NAMES",
    "LABEL_NAMES",
    "task_info",
    "check_task",
    "segments_particles",
]


@dataclass(frozen=True)
class Task:
    """One segmentation task.

    Attributes
    ----------
    name : str
    classes : (str, str)
        The network's output channels, background first.
    label_names : (str, str)
        The label images a prediction becomes: the foreground mask and the
        instances (grains or particles).
    target : str
        The label image the network is trained on (a specimen file's
        ``/labels/<target>``).
    score : str
        The primary score, a column of the metrics tables; it chooses the best
        epoch and the best network.
    score_label : str
        The primary score as figures and the report name it.
    objects : str
        What one instance is called, plural ("grains", "particles").
    stratify_by : str or None
        The per-image value the folds balance (StratifiedGroupKFold), when one
        specimen has one value: a phases specimen is one material, imaged in one
        modality, so without it folds could each hold one modality.
    separate_touching : bool
        Training may weight the matrix gaps between neighbouring instances
        (``training.separation_weight``); grains are kept apart by their
        boundary class already.
    particles : bool
        Particles in a matrix: a phase mask and particle ids, labelled,
        measured and scored alike whatever the particles are (precipitates,
        nanoparticles), with a polarity (which phase is darker).
    """

    name: str
    classes: tuple[str, str]
    label_names: tuple[str, str]
    target: str
    score: str
    score_label: str
    objects: str
    stratify_by: str | None = None
    separate_touching: bool = False
    particles: bool = False

    @property
    def object(self) -> str:
        """What one instance is called, singular."""
        return self.objects.removesuffix("s")


_GRAINS = Task(
    name="grains",
    classes=("interior", "boundary"),
    label_names=("boundaries", "grain_ids"),
    target="boundaries",
    score="boundary_f1",
    score_label="boundary F1",
    objects="grains",
)

_PHASES = Task(
    name="phases",
    classes=("matrix", "particle"),
    label_names=("phase", "particle_ids"),
    target="phase",
    score="iou",
    score_label="particle-phase IoU",
    objects="particles",
    stratify_by="modality",
    separate_touching=True,
    particles=True,
)

#: every segmentation task; ``kernels`` (bicrystals of the teaching figures) is labelled like
#: grains; ``nanoparticles`` (on a support, STEM and TEM) like phases, its matrix the support
#: and the vacuum
TASKS: dict[str, Task] = {
    "grains": _GRAINS,
    "phases": _PHASES,
    "nanoparticles": replace(_PHASES, name="nanoparticles", stratify_by=None),
    "kernels": replace(_GRAINS, name="kernels"),
}

#: the tasks whose networks are trained, evaluated and run on real stacks
SEGMENTATION = ("grains", "phases", "nanoparticles")

#: names of the probability channels of each task
CLASS_NAMES = {name: TASKS[name].classes for name in SEGMENTATION}
#: label images of each task: (foreground mask, instances)
LABEL_NAMES = {name: TASKS[name].label_names for name in SEGMENTATION}


def check_task(task: str, *, allowed=SEGMENTATION) -> None:
    """Raise ValueError unless ``task`` is one of ``allowed``."""
    if task not in allowed:
        raise ValueError(f"task must be one of {tuple(allowed)}, got {task=}")


def segments_particles(task: str) -> bool:
    """Whether ``task`` segments particles in a matrix (:attr:`Task.particles`)."""
    return task in TASKS and TASKS[task].particles


def task_info(task: str, *, allowed=SEGMENTATION) -> Task:
    """The :class:`Task` called ``task``; ValueError for another name."""
    check_task(task, allowed=allowed)
    return TASKS[task]
