"""The ASF/AMC reader and the CMU motion DataModule on tiny generated files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import STAGED_DATA_HINT, staged_data
from vhp_lightning.datamodules.asf_amc import parse_amc, parse_asf, read_motion
from vhp_lightning.datamodules.cmu_mocap import (
    CMU_URL,
    DEFAULT_MOTIONS,
    DROPPED_CHANNELS,
    FEATURE_CHANNELS,
    CMUMocapDataModule,
    frame_features,
)
from vhp_lightning.datamodules.files import DataFileError

SHARED = staged_data() / "cmu_mocap"
XYZ = ("rx", "ry", "rz")
# CMU's 31-bone skeleton: (bone, dofs) in ASF order; 62 AMC channels with the root.
SKELETON = [
    *(
        pair
        for s in "lr"
        for pair in (
            (f"{s}hipjoint", ()), (f"{s}femur", XYZ), (f"{s}tibia", ("rx",)),
            (f"{s}foot", ("rx", "rz")), (f"{s}toes", ("rx",)),
        )
    ),
    ("lowerback", XYZ), ("upperback", XYZ), ("thorax", XYZ), ("lowerneck", XYZ),
    ("upperneck", XYZ), ("head", XYZ),
    *(
        pair
        for s in "lr"
        for pair in (
            (f"{s}clavicle", ("ry", "rz")), (f"{s}humerus", XYZ), (f"{s}radius", ("rx",)),
            (f"{s}wrist", ("ry",)), (f"{s}hand", ("rx", "rz")), (f"{s}fingers", ("rx",)),
            (f"{s}thumb", ("rx", "rz")),
        )
    ),
]  # fmt: skip
AMC_ORDER = ["root"] + [b for b, dofs in SKELETON if dofs]
TINY_MOTIONS = [
    {"name": "walk", "asf": "01/01.asf", "amc": ["01/01_01.amc"]},
    {"name": "run", "asf": "02/02.asf", "amc": ["02/02_01.amc", "02/02_02.amc"]},
]


def asf_text() -> str:
    lines = [":version 1.10", ":name VICON", ":units", "  angle deg", ":root",
             "   order TX TY TZ RX RY RZ", "   axis XYZ", ":bonedata"]  # fmt: skip
    for i, (bone, dofs) in enumerate(SKELETON, start=1):
        lines += ["  begin", f"     id {i}", f"     name {bone}", "     length 1.0"]
        lines += [f"    dof {' '.join(dofs)}"] if dofs else []
        lines.append("  end")
    return "\n".join(lines + [":hierarchy", "  begin", "  end"]) + "\n"


def channel_value(frame: int, channel: int, offset: float = 0.0) -> float:
    return offset + channel + 0.5 * np.sin(0.3 * frame + channel)


def amc_text(n_frames: int, offset: float = 0.0, radians: bool = False) -> str:
    """Frames whose channel c (in AMC order, 62 in all) has value ``channel_value(t, c)``."""
    dofs = dict(SKELETON) | {"root": ("tx", "ty", "tz", *XYZ)}
    lines = ["#!OML:ASF", ":FULLY-SPECIFIED", ":RADIANS" if radians else ":DEGREES"]
    for t in range(n_frames):
        lines.append(str(t + 1))
        c = 0
        for bone in AMC_ORDER:
            values = [channel_value(t, c + k, offset) for k in range(len(dofs[bone]))]
            if radians:
                values = [v if bone == "root" and k < 3 else np.deg2rad(v)
                          for k, v in enumerate(values)]  # fmt: skip
            c += len(values)
            lines.append(bone + " " + " ".join(f"{v:.6f}" for v in values))
    return "\n".join(lines) + "\n"


def write_cmu_fixture(
    root: Path, n_frames: int = 30, gz: bool = False, motions: list[dict] | None = None
) -> Path:
    """The files of ``motions`` (default TINY_MOTIONS: walk 1 file, run 2 files) under
    ``root``, ``n_frames`` generated frames each."""
    for m_i, m in enumerate(TINY_MOTIONS if motions is None else motions):
        asf = root / m["asf"]
        asf.parent.mkdir(parents=True, exist_ok=True)
        asf.write_text(asf_text())
        for a_i, amc in enumerate(m["amc"]):
            text = amc_text(n_frames, offset=10.0 * m_i + a_i)
            path = root / amc
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(text.encode()))
            else:
                path.write_text(text)
    return root


def test_feature_channels_are_the_50_joint_angles_without_root_and_fingers() -> None:
    all_channels = [f"{b}.{d}" for b, dofs in SKELETON for d in dofs]
    all_channels += [f"root.{d}" for d in ("tx", "ty", "tz", *XYZ)]
    assert len(all_channels) == 62 and len(FEATURE_CHANNELS) == 50
    assert set(FEATURE_CHANNELS) | set(DROPPED_CHANNELS) == set(all_channels)
    assert not set(FEATURE_CHANNELS) & set(DROPPED_CHANNELS)
    assert not any(c.startswith(("root", "lfingers", "rthumb")) for c in FEATURE_CHANNELS)


def test_parser_reads_every_channel_and_features_pick_the_right_ones(tmp_path: Path) -> None:
    dofs = parse_asf(asf_text())
    assert dofs["root"] == ["tx", "ty", "tz", "rx", "ry", "rz"] and dofs["lhipjoint"] == []
    values, names = parse_amc(amc_text(5), dofs)
    assert values.shape == (5, 62) and names[:4] == ["root.tx", "root.ty", "root.tz", "root.rx"]
    expected = [[channel_value(t, c) for c in range(62)] for t in range(5)]
    np.testing.assert_allclose(values, expected, atol=1e-5)
    features = frame_features(values, names)
    assert features.shape == (5, 50)
    k = FEATURE_CHANNELS.index("lfemur.ry")
    np.testing.assert_allclose(features[:, k], values[:, names.index("lfemur.ry")])
    rad, _ = parse_amc(amc_text(5, radians=True), dofs)
    np.testing.assert_allclose(rad, values, atol=1e-4)  # :RADIANS converted to degrees
    (tmp_path / "m.amc.gz").write_bytes(gzip.compress(amc_text(3).encode()))
    (tmp_path / "s.asf").write_text(asf_text())
    assert read_motion(tmp_path / "s.asf", tmp_path / "m.amc.gz")[0].shape == (3, 62)


def test_parser_errors_name_the_problem() -> None:
    dofs = parse_asf(asf_text())
    with pytest.raises(ValueError, match="'lfemur' has 2 values"):
        parse_amc(":DEGREES\n1\nlfemur 1 2\n", dofs)
    with pytest.raises(ValueError, match="not in the skeleton"):
        parse_amc("1\nnosuchbone 1\n", dofs)
    with pytest.raises(ValueError, match="no ':root' section"):
        parse_asf(":bonedata\n begin\n name a\n end\n")
    with pytest.raises(ValueError, match="lacks the feature channels"):
        frame_features(np.zeros((1, 2)), ["root.tx", "lfemur.rx"])


@pytest.mark.parametrize("normalization", ["minmax", "standard"])
def test_datamodule_features_labels_and_train_statistics(tmp_path: Path, normalization) -> None:
    write_cmu_fixture(tmp_path, n_frames=40, gz=True)
    dm = CMUMocapDataModule(
        tmp_path, TINY_MOTIONS, normalization=normalization, batch_size=8, eval_batch_size=16
    )
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 120 and sizes["val"] == sizes["test"] == 12  # 10% per motion
    x, y = dm.splits["train"].tensors
    assert x.shape == (96, 50) and x.dtype == torch.float32
    assert y.bincount().tolist() == [32, 64]  # walk: 1 file, run: 2 files
    if normalization == "minmax":
        assert torch.allclose(x.min(0).values, torch.zeros(50), atol=1e-6)
        assert torch.allclose(x.max(0).values, torch.ones(50), atol=1e-6)
    else:
        assert torch.allclose(x.mean(0), torch.zeros(50), atol=1e-5)
        assert torch.allclose(x.std(0, unbiased=False), torch.ones(50), atol=1e-4)
    raw = dm.denormalize(x.double().numpy())
    assert raw.shape == (96, 50) and raw.min() > -1 and raw.max() < 80  # degrees again
    batch_x, batch_y = next(iter(dm.train_dataloader()))
    assert batch_x.shape == (8, 50) and batch_y.dtype == torch.int64
    state = dm.state_dict()
    assert state["channels"] == list(FEATURE_CHANNELS) and len(state["offset"]) == 50
    other = CMUMocapDataModule(tmp_path, TINY_MOTIONS, normalization=normalization)
    other.load_state_dict(state)
    np.testing.assert_allclose(other.scale, dm.scale)


def test_renamed_files_are_found(tmp_path: Path) -> None:
    write_cmu_fixture(tmp_path, n_frames=10)
    (tmp_path / "02" / "02_01.amc").rename(tmp_path / "02" / "02_01-run.amc")
    (tmp_path / "02" / "02.asf").rename(tmp_path / "02" / "02-run.asf")
    dm = CMUMocapDataModule(tmp_path, TINY_MOTIONS, frame_step=2)
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 15


def test_missing_files_error_names_them_and_the_download_site(tmp_path: Path) -> None:
    write_cmu_fixture(tmp_path, n_frames=10)
    (tmp_path / "02" / "02_02.amc").unlink()
    dm = CMUMocapDataModule(tmp_path, TINY_MOTIONS)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    assert str(tmp_path / "02" / "02_02.amc") in str(err.value) and CMU_URL in str(err.value)
    assert "01_01" not in str(err.value)


def test_bad_settings_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Choose one of: minmax, standard"):
        CMUMocapDataModule(tmp_path, TINY_MOTIONS, normalization="zscore")
    with pytest.raises(ValueError, match=r"data_shape=\[50\]"):
        CMUMocapDataModule(tmp_path, TINY_MOTIONS, data_shape=[62])


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"no staged CMU files in {SHARED}: {STAGED_DATA_HINT}"
)
def test_staged_cmu_files_give_five_motions() -> None:
    dm = CMUMocapDataModule(SHARED)
    dm.setup()
    y = torch.cat([s.tensors[1] for s in dm.splits.values()])
    assert y.bincount().tolist() == [358, 141, 1086, 3261, 1102]
    assert dm.splits["train"].tensors[0].shape[1] == 50


def test_config_is_the_app_f_setting_and_lists_the_default_motions(compose_cfg) -> None:
    cfg = compose_cfg("dataset=cmu_mocap", "data_dir=/data", tiny=False)
    assert cfg.dataset.data_dir == "/data/cmu_mocap"
    assert [dict(m) for m in cfg.dataset.motions] == DEFAULT_MOTIONS
    assert cfg.model.encoder.in_dim == 50 and cfg.model.encoder.out_dim == 2
    assert cfg.model.encoder.hidden == [256, 256, 256, 256]
    assert cfg.model.likelihood._target_.endswith("GaussianLikelihood")
    assert (cfg.optim.scheme.kappa, cfg.optim.scheme.nu, cfg.model.n_importance) == (0.02, 1.0, 32)
    assert cfg.optim.optimizer.lr == 1e-4


def test_truncated_gzipped_motion_file_names_the_file(tmp_path: Path) -> None:
    write_cmu_fixture(tmp_path, n_frames=10, gz=True)
    bad = next(tmp_path.rglob("*.amc.gz"))
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DataFileError) as err:
        CMUMocapDataModule(tmp_path, TINY_MOTIONS).setup()
    assert str(bad) in str(err.value) and "CMU archive" in str(err.value)
