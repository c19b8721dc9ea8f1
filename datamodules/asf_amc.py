"""A small reader for the Acclaim skeleton (ASF) and motion (AMC) files of the CMU Graphics Lab
Motion Capture Database (http://mocap.cs.cmu.edu).

Only what ``datamodules.cmu_mocap`` needs: the degrees of freedom (DOF) of each bone from the
ASF, and from the AMC one row of channel values per frame, in degrees. A channel is named
``"<bone>.<dof>"``, e.g. ``"lfemur.rx"`` or ``"root.tx"``. Files may be gzipped (``.gz``).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vhp_lightning.datamodules.files import reading


def read_text(path: str | Path) -> str:
    """The text of ``path``, decompressed when its name ends in ``.gz``."""
    path = Path(path)
    with reading(path, "replace it with the file from the CMU archive"):
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as f:
                return f.read()
        return path.read_text()


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` of each line of ``text`` that is neither blank nor a
    ``#`` comment."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def parse_asf(text: str, where: str = "ASF") -> dict[str, list[str]]:
    """Bone name -> its DOF names in file order, from the text of an ASF file.

    The root's DOFs come from ``:root ... order TX TY TZ RX RY RZ`` (lower-cased); bones without
    a ``dof`` line (e.g. ``lhipjoint``) are kept with an empty list, as they have no AMC values.

    Raises:
        ValueError: no ``:root`` section or no ``:bonedata`` section in ``text``.
    """
    dofs: dict[str, list[str]] = {}
    section, bone = "", None
    for _, line in _content_lines(text):
        if line.startswith(":"):
            section = line.split()[0]
            continue
        words = line.split()
        if section == ":root" and words[0] == "order":
            dofs["root"] = [w.lower() for w in words[1:]]
        elif section == ":bonedata":
            if words[0] == "begin":
                bone = None
            elif words[0] == "name":
                bone = words[1]
                dofs[bone] = []
            elif words[0] == "dof" and bone is not None:
                dofs[bone] = [w.lower() for w in words[1:]]
    if "root" not in dofs:
        raise ValueError(f"{where}: no ':root' section with an 'order' line; is it an ASF file?")
    if len(dofs) == 1:
        raise ValueError(f"{where}: no bones found in a ':bonedata' section; is it an ASF file?")
    return dofs


def channel_names(dofs: dict[str, list[str]], bone_order: list[str]) -> list[str]:
    """``["bone.dof", ...]`` for the bones in ``bone_order`` (their DOFs in ASF order)."""
    return [f"{bone}.{d}" for bone in bone_order for d in dofs[bone]]


def parse_amc(
    text: str, dofs: dict[str, list[str]], where: str = "AMC"
) -> tuple[np.ndarray, list[str]]:
    """Frames of an AMC file: ``(values: (T, C) float64 in degrees, channel names (C,))``.

    ``dofs`` is ``parse_asf`` of the skeleton the motion was recorded with. The channels are
    the bones in the order of the first frame, each with its ASF DOFs. Every frame must list the
    same bones with as many values as the ASF gives them DOFs; ``:RADIANS`` files are converted
    to degrees (root translations are left as they are).

    Raises:
        ValueError: a bone unknown to the ASF, a wrong value count, a frame missing a bone, or no
            frames at all; the message names the frame.
    """
    frames: list[dict[str, list[float]]] = []
    radians = False
    for lineno, line in _content_lines(text):
        if line.startswith(":"):
            radians = radians or line.upper().startswith(":RADIANS")
            continue
        words = line.split()
        if len(words) == 1 and words[0].isdigit():
            frames.append({})
            continue
        if not frames:
            raise ValueError(f"{where}:{lineno}: values before the first frame number: {line!r}")
        bone = words[0]
        if bone not in dofs:
            raise ValueError(
                f"{where}:{lineno}: bone {bone!r} is not in the skeleton (ASF); use the ASF of "
                "the same subject as the AMC"
            )
        values = [float(v) for v in words[1:]]
        if len(values) != len(dofs[bone]):
            raise ValueError(
                f"{where}:{lineno}: bone {bone!r} has {len(values)} values, the ASF gives it "
                f"{len(dofs[bone])} DOFs ({' '.join(dofs[bone])})"
            )
        frames[-1][bone] = values
    if not frames:
        raise ValueError(f"{where}: no frames found; is it an AMC file?")
    bones = list(frames[0])
    names = channel_names(dofs, bones)
    out = np.empty((len(frames), len(names)), dtype=np.float64)
    for t, frame in enumerate(frames):
        if list(frame) != bones and sorted(frame) != sorted(bones):
            missing = sorted(set(bones) - set(frame))
            raise ValueError(
                f"{where}: frame {t + 1} lists bones {sorted(frame)}, expected {sorted(bones)}"
                + (f" (missing {missing})" if missing else "")
            )
        out[t] = [v for bone in bones for v in frame[bone]]
    if radians:
        rotation = np.array([not n.split(".")[1].startswith("t") for n in names])
        out[:, rotation] *= 180.0 / math.pi
    return out, names


def read_motion(asf: str | Path, amc: str | Path) -> tuple[np.ndarray, list[str]]:
    """``parse_amc`` of the file ``amc`` with the skeleton of the file ``asf``."""
    dofs = parse_asf(read_text(asf), where=str(asf))
    return parse_amc(read_text(amc), dofs, where=str(amc))
