"""CMU human motion capture (sec. 4.2, App. C): one 50-d joint-angle vector per frame, labelled
with its motion.

Each frame of an AMC file (CMU's 31-bone skeleton: 62 channels, 6 of the root and 56 joint angles,
in degrees) becomes the 50-d feature vector of sec. 4.2 (the paper follows Chen et al. 2015, [7],
without listing the channels). Our reading: keep every joint angle except the fingers, i.e. drop

- the root's 6 channels (``root.tx ty tz rx ry rz``: global position and orientation), and
- the 6 finger channels (``rfingers.rx``, ``rthumb.rx rz``, ``lfingers.rx``, ``lthumb.rx rz``),

which leaves exactly these 50 channels, in this order (``FEATURE_CHANNELS``)::

    lowerback.rx ry rz, upperback.rx ry rz, thorax.rx ry rz, lowerneck.rx ry rz,
    upperneck.rx ry rz, head.rx ry rz,                                            # 18 spine/head
    rclavicle.ry rz, rhumerus.rx ry rz, rradius.rx, rwrist.ry, rhand.rx rz,       #  9 right arm
    lclavicle.ry rz, lhumerus.rx ry rz, lradius.rx, lwrist.ry, lhand.rx rz,       #  9 left arm
    rfemur.rx ry rz, rtibia.rx, rfoot.rx rz, rtoes.rx,                            #  7 right leg
    lfemur.rx ry rz, ltibia.rx, lfoot.rx rz, ltoes.rx                             #  7 left leg

Normalisation, per feature with statistics of the TRAIN split only (kept in ``offset``/``scale``,
saved in checkpoints through ``state_dict``): ``"minmax"`` (default) maps the training range to
[0, 1], the scale of the pendulum's pixels on which kappa = 0.02 of App. F is set, and the range
of the VampPrior's pseudo-inputs; ``"standard"`` subtracts the mean and divides by the standard
deviation. Features that are constant in the training frames (the CMU clavicles are ~1e-15)
get scale 1.

The motions: the paper uses "five different motions" without naming the trials. The default list
(``DEFAULT_MOTIONS``, also in ``conf/dataset/cmu_mocap.yaml``) is walk 35_01, run 09_06, dance
131_04, martial arts 135_06 and balance 49_18; ``motions=`` takes any list of
``{name, asf, amc: [files]}``, paths relative to ``data_dir``. Each file is found as named, or
gzipped (``.gz``), or renamed with a suffix (``09/09_06-run.amc`` for ``09/09_06.amc``,
``09/09-run.asf`` for ``09/09.asf``). Frames of each motion are split at random (``seed``) into
train/val/test with ``val_fraction``/``test_fraction``. Batches are
``(x: (B, 50) float32, label: (B,) int64)``, label = index of the motion in ``motions``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from vhp_lightning.datamodules.asf_amc import read_motion
from vhp_lightning.datamodules.files import resolve_data_dir
from vhp_lightning.datamodules.splits import (
    SplitDataModule,
    check_batch_sizes,
    check_fractions,
    split_by_fractions,
)
from vhp_lightning.io.config_values import positive_int

log = logging.getLogger(__name__)

CMU_URL = "http://mocap.cs.cmu.edu"
NORMALIZATIONS = ("minmax", "standard")
DROPPED_CHANNELS = (
    *(f"root.{d}" for d in ("tx", "ty", "tz", "rx", "ry", "rz")),
    "rfingers.rx", "rthumb.rx", "rthumb.rz", "lfingers.rx", "lthumb.rx", "lthumb.rz",
)  # fmt: skip
_BONES = (
    *((b, ("rx", "ry", "rz")) for b in ("lowerback", "upperback", "thorax", "lowerneck")),
    *((b, ("rx", "ry", "rz")) for b in ("upperneck", "head")),
    *(
        pair
        for side in "rl"
        for pair in (
            (f"{side}clavicle", ("ry", "rz")),
            (f"{side}humerus", ("rx", "ry", "rz")),
            (f"{side}radius", ("rx",)),
            (f"{side}wrist", ("ry",)),
            (f"{side}hand", ("rx", "rz")),
        )
    ),
    *(
        pair
        for side in "rl"
        for pair in (
            (f"{side}femur", ("rx", "ry", "rz")),
            (f"{side}tibia", ("rx",)),
            (f"{side}foot", ("rx", "rz")),
            (f"{side}toes", ("rx",)),
        )
    ),
)
FEATURE_CHANNELS: tuple[str, ...] = tuple(f"{b}.{d}" for b, dofs in _BONES for d in dofs)
assert len(FEATURE_CHANNELS) == 50

DEFAULT_MOTIONS: list[dict[str, Any]] = [
    {"name": "walk", "asf": "35/35.asf", "amc": ["35/35_01.amc"]},
    {"name": "run", "asf": "09/09.asf", "amc": ["09/09_06.amc"]},
    {"name": "dance", "asf": "131/131.asf", "amc": ["131/131_04.amc"]},
    {"name": "martial_arts", "asf": "135/135.asf", "amc": ["135/135_06.amc"]},
    {"name": "balance", "asf": "49/49.asf", "amc": ["49/49_18.amc"]},
]


def frame_features(values: np.ndarray, channels: Sequence[str], where: str = "") -> np.ndarray:
    """The ``FEATURE_CHANNELS`` of AMC frames ``values: (T, C)`` named ``channels``: ``(T, 50)``.

    Raises:
        ValueError: a feature channel is missing from ``channels``.
    """
    index = {name: i for i, name in enumerate(channels)}
    missing = [c for c in FEATURE_CHANNELS if c not in index]
    if missing:
        raise ValueError(
            f"{where or 'motion'} lacks the feature channels {missing}; the 50-d features need "
            "CMU's 31-bone skeleton (ASF) with every joint of FEATURE_CHANNELS"
        )
    return values[:, [index[c] for c in FEATURE_CHANNELS]]


def find_file(data_dir: Path, name: str) -> Path | None:
    """``data_dir/name``, else ``name.gz``, else a renamed ``<stem>-*<suffix>[.gz]`` beside it."""
    path = data_dir / name
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    if path.parent.is_dir():
        renamed = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}*"))
        renamed = [p for p in renamed if p.name.endswith((path.suffix, path.suffix + ".gz"))]
        if renamed:
            return renamed[0]
    return None


def fit_normalization(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(offset, scale)``, each ``(D,)``, of ``x: (N, D)``: min and range
    (``"minmax"``) or mean and std (``"standard"``); a constant feature gets scale 1."""
    if kind == "minmax":
        offset, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    else:
        offset, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale < 1e-8, 1.0, scale)
    return offset, scale


class CMUMocapDataModule(SplitDataModule):
    """Frames of five CMU motions as 50-d normalised joint-angle vectors (sec. 4.2, App. C).

    Args:
        data_dir: the folder holding the ``<subject>/<file>`` ASF/AMC files
            (``${data_dir}/cmu_mocap`` in the config).
        motions: ``[{name, asf, amc: file or [files]}, ...]``; label i = the i-th motion.
        frame_step: keep every ``frame_step``-th frame (CMU records at 120 Hz).
        normalization: ``"minmax"`` (train range -> [0, 1]) or ``"standard"`` (z-score).
        val_fraction, test_fraction: share of each motion's frames held out, drawn with ``seed``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        motions: Sequence[dict[str, Any]] | None = None,
        data_shape: Sequence[int] = (50,),
        frame_step: int = 1,
        normalization: str = "minmax",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 100,
        eval_batch_size: int = 1_000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if data_dir is None or str(data_dir) == "":
            data_dir = resolve_data_dir(None) / "cmu_mocap"
        self.data_dir = Path(data_dir).expanduser()
        self.motions = [dict(m) for m in (DEFAULT_MOTIONS if motions is None else motions)]
        if not self.motions:
            raise ValueError("dataset.motions is empty; list at least one {name, asf, amc}")
        for m in self.motions:
            if not {"name", "asf", "amc"} <= set(m):
                raise ValueError(f"each motion needs keys name, asf, amc; got {m}")
            m["amc"] = [m["amc"]] if isinstance(m["amc"], str) else list(m["amc"])
        if tuple(int(d) for d in data_shape) != (len(FEATURE_CHANNELS),):
            raise ValueError(
                f"CMU features are {len(FEATURE_CHANNELS)}-d: set dataset.data_shape=[50], got "
                f"{list(data_shape)}"
            )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown dataset.normalization {normalization!r}. Choose one of: "
                f"{', '.join(NORMALIZATIONS)}."
            )
        check_fractions(val_fraction, test_fraction)
        check_batch_sizes(batch_size, eval_batch_size)
        frame_step = positive_int("dataset.frame_step", frame_step)
        self.data_shape = (len(FEATURE_CHANNELS),)
        self.frame_step, self.normalization = frame_step, normalization
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.motion_names = [str(m["name"]) for m in self.motions]
        self.offset: np.ndarray | None = None  # (50,) per-feature statistics of the train split
        self.scale: np.ndarray | None = None
        self.splits: dict[str, TensorDataset] = {}

    # --- files ----------------------------------------------------------------------------------
    def files(self) -> list[tuple[str, Path, list[Path]]]:
        """``[(motion name, asf path, [amc paths])]``; raises naming every missing file."""
        found, missing = [], []
        for m in self.motions:
            asf = find_file(self.data_dir, str(m["asf"]))
            missing += [] if asf else [str(m["asf"])]
            amcs = [find_file(self.data_dir, str(a)) for a in m["amc"]]
            missing += [str(a) for a, p in zip(m["amc"], amcs, strict=True) if p is None]
            found.append((str(m["name"]), asf, amcs))
        if missing:
            paths = ", ".join(str(self.data_dir / name) for name in missing)
            raise FileNotFoundError(
                f"CMU motion capture files not found: {paths}. Download the ASF/AMC files of "
                f"those subjects and trials from {CMU_URL} (subject pages, or the all-subjects "
                "ASF/AMC archive) into <data_dir>/<subject>/ (gzipped .gz or renamed "
                "'<trial>-<label>.amc' copies are accepted too), then point dataset.data_dir "
                "(or data_dir=..., whose cmu_mocap/ subfolder is used, or $VHP_DATA_DIR) at it; "
                "or choose other trials with dataset.motions"
            )
        return found  # type: ignore[return-value]

    def load_features(self) -> tuple[np.ndarray, np.ndarray]:
        """All frames ``(features (N, 50) float64 in degrees, labels (N,) int64)``."""
        features, labels = [], []
        for label, (name, asf, amcs) in enumerate(self.files()):
            for amc in amcs:
                values, channels = read_motion(asf, amc)
                x = frame_features(values, channels, where=str(amc))[:: self.frame_step]
                features.append(x)
                labels.append(np.full(len(x), label, dtype=np.int64))
                log.info("CMU mocap: %s %d frames from %s", name, len(x), amc)
        return np.concatenate(features), np.concatenate(labels)

    # --- splits ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y = self.load_features()
        rng = np.random.default_rng(self.seed)
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        for label in np.unique(y):
            order = rng.permutation(np.flatnonzero(y == label))
            for k, idx in split_by_fractions(order, self.val_fraction, self.test_fraction).items():
                parts[k].append(idx)
        index = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
        if len(index["train"]) == 0:
            raise ValueError("no training frames left; lower val_fraction/test_fraction")
        if self.offset is None or self.scale is None:  # keep restored statistics
            self.offset, self.scale = fit_normalization(x[index["train"]], self.normalization)
        x_norm = torch.from_numpy(self.normalize(x)).float()
        y_t = torch.from_numpy(y)
        self.splits = {k: TensorDataset(x_norm[i], y_t[i]) for k, i in index.items()}
        sizes = "/".join(str(len(index[k])) for k in ("train", "val", "test"))
        log.info("CMU mocap: %s train/val/test frames of %s", sizes, ", ".join(self.motion_names))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Degrees ``(N, 50)`` -> normalised features ``(N, 50)`` with the train statistics."""
        if self.offset is None or self.scale is None:
            raise RuntimeError("call setup() first: the statistics come from the train split")
        return (x - self.offset) / self.scale

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Normalised features ``(N, 50)`` (e.g. decoded) -> joint angles in degrees."""
        if self.offset is None or self.scale is None:
            raise RuntimeError("call setup() first: the statistics come from the train split")
        return np.asarray(x) * self.scale + self.offset

    def state_dict(self) -> dict[str, Any]:
        """The normalisation statistics, saved in Lightning checkpoints."""
        if self.offset is None or self.scale is None:
            return {}
        return {
            "channels": list(FEATURE_CHANNELS),
            "normalization": self.normalization,
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.offset = np.asarray(state_dict["offset"], dtype=np.float64)
            self.scale = np.asarray(state_dict["scale"], dtype=np.float64)
