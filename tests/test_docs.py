"""Every command in ``docs/`` is tested, and ``docs/configs.md`` lists every config option.

Fenced blocks of each page run in order in one temporary folder (the page's "session"), in a mode
set by an HTML comment on the line before the block:

* no marker, or ``<!-- test: compose-only -->`` - nothing runs: each ``python -m
  vhp_lightning.train`` / ``vhp-train`` / ``evaluate`` / ``vhp-eval`` command is composed with
  Hydra (every job of a ``-m`` sweep), ``make X`` is checked with ``make -n X``, ``pip install
  '.[extra]'`` against pyproject's extras, ``python -m mod`` / ``python file.py`` for existence;
  for GPU, cluster and download commands;
* ``<!-- test: tiny [key=value ...] -->`` - train/eval commands run in this process with small
  nets, data and budgets appended (and the marker's own overrides after those); any other line
  runs in ``bash``. ``outputs/<date>/<time>`` and ``<run dir>`` stand for the newest run;
* ``<!-- test: run -->`` - every line runs in ``bash`` as written (cheap commands only);
* ``<!-- test: python -->`` before a ```` ```python ```` block - the code runs (``exec``).

Train/eval commands run in-process (no new interpreter per command) to keep the suite fast.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers)

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Hydra apps: the command's spellings -> primary config.
APPS = {
    ("python", "-m", "vhp_lightning.train"): "train",
    ("vhp-train",): "train",
    ("python", "-m", "vhp_lightning.evaluate"): "eval",
    ("vhp-eval",): "eval",
}
# Small nets and few importance samples (also tests/test_faults.py's resumable runs).
SMALL_NETS = [
    "paper.nets.encoder.hidden=[16]",
    "paper.nets.decoder.hidden=[16]",
    "paper.nets.prior_encoder.hidden=[16]",
    "paper.nets.prior_decoder.hidden=[16]",
    "paper.n_importance=2",
]
# Appended in tiny mode, each only where the composed config has the key (so a doc command's
# dataset or model choice is kept). The doc command's own budget is replaced.
TINY = {
    "train": [
        "dataset.n_samples=400",
        "dataset.n_val=50",
        "dataset.n_test=50",
        "dataset.batch_size=50",
        "dataset.eval_batch_size=50",
        *SMALL_NETS,
        "trainer.max_steps=8",
        "trainer.max_time=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "callbacks.model_checkpoint.every_n_epochs=1",
        "callbacks.pendulum_figures.every_n_steps=1000",
        "callbacks.pendulum_figures.n_prior_samples=50",
    ],
    "eval": [
        "limit=20",
        "batch_size=10",
        "n_samples=4",
        "chunk_size=40",
        "device=cpu",
        "interpolation.n_nodes=60",
        "interpolation.n_neighbors=5",
        "interpolation.n_graphs=1",
        "interpolation.n_pairs=2",
        "interpolation.n_strips=1",
    ],
}
# Tools a compose-only block may name without a check of its own (documented, not run).
EXTERNAL_TOOLS = {"tensorboard", "wandb", "sbatch", "squeue", "scancel", "nvidia-smi", "git"}
# Hydra's own flags that take a value (``--cfg job``); they leave the overrides unchanged.
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--info"}
BASH_MODES = ("compose-only", "tiny", "run")
MARKER = re.compile(r"<!--\s*test:\s*([\w-]+)(.*?)-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    mode: str
    extra: list[str]
    body: str = ""
    commands: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """The fenced ``bash``/``python`` blocks of ``page`` with their test mode."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence.group(1):
            i += 1
            continue
        lang = fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(prev.strip())
        mode = marker.group(1) if marker else "compose-only"
        extra = shlex.split(marker.group(2)) if marker else []
        if lang in ("bash", "sh", "console", "python"):
            body = "\n".join(lines[i + 1 : end])
            blocks.append(Block(page.name, i + 1, lang, mode, extra, body, _commands(body)))
        i = end + 1
    return blocks


def _commands(body: str) -> list[str]:
    """Shell lines of a block: continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            out.append(line)
    return out


# --- Hydra apps, composed or run in this process ---------------------------------------------
@dataclass
class AppCall:
    config: str  # train | eval
    overrides: list[str]
    multirun: bool
    env: dict[str, str]
    hydra_flags: bool  # --cfg, --help, --info, ...: left to a real process


def app_call(command: str) -> AppCall | None:
    """Parse ``[VAR=v ...] <app> [-m] overrides...``; None if not a Hydra app command."""
    tokens = shlex.split(command, comments=True)
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    for spelling, config in APPS.items():
        if tuple(tokens[: len(spelling)]) == spelling:
            args, overrides, flags = tokens[len(spelling) :], [], False
            multirun = any(a in ("-m", "--multirun") for a in args)
            while args:
                arg = args.pop(0)
                if arg in ("-m", "--multirun"):
                    continue
                if arg.startswith("-"):
                    flags = True
                    if arg in HYDRA_FLAGS_WITH_VALUE and args:
                        args.pop(0)
                    continue
                overrides.append(arg)
            return AppCall(config, overrides, multirun, env, flags)
    return None


def _compose(config: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=True)


def jobs(call: AppCall) -> list[list[str]]:
    """Override lists of every job the command starts (one unless it is a basic ``-m`` sweep)."""
    if not call.multirun:
        return [call.overrides]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(call.overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = _compose(call.config, fixed)
    if "BasicSweeper" not in str(OmegaConf.select(cfg, "hydra.sweeper._target_")):
        return [fixed]  # Optuna & co. choose their own jobs: compose the fixed part
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    from_config = [f"{k}={v}" for k, v in params.items()]
    batches = BasicSweeper.split_arguments(
        parser.parse_overrides(from_config + call.overrides), None
    )
    return [job for batch in batches for job in batch]


def _existing(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The overrides whose key exists in ``cfg`` (tiny settings that apply to this config)."""
    keep = []
    for override in overrides:
        key = override.split("=", 1)[0]
        node, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if isinstance(parent, DictConfig) and leaf in parent:
            keep.append(override)
    return keep


def run_app(
    call: AppCall,
    overrides: list[str],
    tiny: list[str] | None,
    job_num: int,
    sweep_dir: str | None = None,
) -> DictConfig:
    """Compose one job; with ``tiny`` given, run it in this process as ``hydra.main`` would."""
    cfg = _compose(call.config, overrides)
    if tiny is None:
        return cfg
    cfg = _compose(call.config, [*overrides, *_existing(cfg, tiny)])
    hydra_cfg = cfg.hydra
    out = (
        hydra_cfg.run.dir if not call.multirun else f"{sweep_dir or hydra_cfg.sweep.dir}/{job_num}"
    )
    out = _fresh(Path(out).resolve())
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = job_num
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    if call.config == "train":
        from vhp_lightning.train import train

        train(cfg)
    else:
        from vhp_lightning.evaluate import evaluate

        evaluate(cfg, out)
    return cfg


def _sweep_dir(cfg: DictConfig, call: AppCall) -> str | None:
    if not call.multirun or "hydra" in cfg:  # composed only: nothing was written
        return None
    return str(Path(HydraConfig.get().runtime.output_dir).parent)


def _fresh(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2``... when a run in the same second already used it."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    candidate.mkdir(parents=True)
    return candidate


# --- placeholders and other commands ---------------------------------------------------------
def newest_run(cwd: Path, root: str = "outputs") -> str:
    runs = [p for p in (cwd / root).glob("*/*") if p.is_dir() and "eval" not in p.parts[-2:]]
    if not runs:
        raise AssertionError(f"a command refers to a run, but {cwd / root} holds none yet")
    return str(max(runs, key=lambda p: p.stat().st_mtime).relative_to(cwd))


def substitute(command: str, cwd: Path) -> str:
    """Replace ``outputs/<date>/<time>`` / ``<run dir>`` with the newest run's folder."""
    if "<date>/<time>" in command or "<run dir>" in command:
        run = newest_run(cwd)
        command = command.replace("outputs/<date>/<time>", run).replace("<run dir>", run)
    if "multirun/<date>/<time>" in command:
        command = command.replace("multirun/<date>/<time>", newest_run(cwd, "multirun"))
    return command


def run_shell(command: str, cwd: Path, where: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "offline"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{where}: `{command}` failed:\n{proc.stdout}\n{proc.stderr}"


def check_static(command: str, where: str) -> None:
    """Compose-only checks of a command that is not a Hydra app."""
    tokens = shlex.split(command, comments=True)
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens.pop(0)
    if not tokens:
        return
    if tokens[0] == "cd":
        return
    if tokens[0] == "make":
        for target in tokens[1:]:
            if "=" not in target:
                proc = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True)
                assert proc.returncode == 0, f"{where}: no make target {target!r}"
        return
    if tokens[:3] == ["python", "-m", "pip"] or tokens[0] == "pip":
        extras = pyproject_extras()
        for token in tokens:
            for extra in re.findall(r"\[([\w,-]+)\]", token):
                for name in extra.split(","):
                    assert name in extras, f"{where}: no extra [{name}] in pyproject.toml"
        return
    if tokens[:2] == ["python", "-m"]:
        assert find_spec(tokens[2]) is not None, f"{where}: no module {tokens[2]}"
        return
    if tokens[0] == "python" and tokens[1].endswith(".py"):
        assert (REPO / tokens[1]).is_file(), f"{where}: no file {tokens[1]}"
        return
    assert tokens[0] in EXTERNAL_TOOLS, (
        f"{where}: don't know how to test `{command}`: use a Hydra app, make, pip, python, or "
        f"one of {sorted(EXTERNAL_TOOLS)}; or mark the block `<!-- test: run -->`"
    )


def pyproject_extras() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^(\w[\w-]*)\s*=", section, flags=re.M))


# --- the tests -------------------------------------------------------------------------------
@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield tmp_path
    GlobalHydra.instance().clear()


# Groups another change is adding; until conf/<group>/ exists their commands skip, then compose.
PENDING_GROUPS = ("hparams_search", "hydra/launcher")
PLUGINS = {
    "hydra/launcher": "hydra_plugins.hydra_submitit_launcher",
    "hparams_search": "hydra_plugins.hydra_optuna_sweeper",
}


def _unavailable(call: AppCall) -> str | None:
    """Why a command cannot be composed here: its group is not in conf/ yet, or its Hydra plugin
    is not installed (launcher and sweeper plugins come with the [sweep] extra)."""
    for group in PENDING_GROUPS:
        if any(o.startswith(f"{group}=") for o in call.overrides):
            if not (REPO / "conf" / group).is_dir():
                return f"conf/{group}/ does not exist yet"
            if not _has(PLUGINS[group]):
                return f"needs {PLUGINS[group]} (pip install '.[sweep]')"
    return None


def _has(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_commands(page: Path, session: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skipped = []
    for block in parse_blocks(page):
        if block.lang == "python":
            if block.mode == "python":
                code = compile(block.body, block.where(), "exec")
                exec(code, {"__name__": "__docs__"})  # noqa: S102
            continue
        for command in block.commands:
            where = f"{block.where()} `{command}`"
            call = app_call(command)
            if block.mode == "run" or (call is None and block.mode == "tiny"):
                run_shell(substitute(command, session), session, where)
                continue
            if call is None:
                check_static(command, where)
                continue
            reason = _unavailable(call)
            if reason:
                skipped.append(f"{where}: {reason}")
                continue
            if call.hydra_flags and block.mode == "tiny":  # --cfg, --help: a real process
                run_shell(substitute(command, session), session, where)
                continue
            tiny = [*TINY[call.config], *block.extra] if block.mode == "tiny" else None
            with monkeypatch.context() as m:
                for key, value in call.env.items():
                    m.setenv(key, value)
                overrides = [
                    substitute(o, session) if tiny else re.sub(r"<[^>]+>", "x", o)
                    for o in call.overrides
                ]
                call = AppCall(call.config, overrides, call.multirun, call.env, False)
                sweep_dir = None  # one sweep folder for all jobs, as Hydra's launcher
                for num, job in enumerate(jobs(call)):
                    cfg = run_app(call, job, tiny, num, sweep_dir)
                    sweep_dir = sweep_dir or _sweep_dir(cfg, call)
    if skipped:
        pytest.skip("not composed: " + "; ".join(skipped))


def test_every_block_has_a_known_mode() -> None:
    for page in PAGES:
        for block in parse_blocks(page):
            known = ("python", "compose-only") if block.lang == "python" else BASH_MODES
            assert block.mode in known, f"{block.where()}: unknown test mode {block.mode!r}"


# --- docs/configs.md lists every option ------------------------------------------------------
def config_options() -> dict[str, list[str]]:
    """``{group: [option, ...]}`` for every option file in ``conf/<group>/`` (nested groups such
    as ``hydra/launcher`` included); primary configs at the top of ``conf/`` are not groups."""
    groups: dict[str, list[str]] = {}
    for path in sorted((REPO / "conf").rglob("*.yaml")):
        rel = path.relative_to(REPO / "conf")
        if len(rel.parts) > 1:
            groups.setdefault("/".join(rel.parts[:-1]), []).append(path.stem)
    return groups


def _sections(text: str) -> dict[str, str]:
    """``## `group` ...`` headings of configs.md -> their text (up to the next ``##``)."""
    out = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        for name in re.findall(r"`([\w/]+)`", heading):
            out[name] = body
    return out


def test_configs_page_lists_every_option() -> None:
    sections = _sections((DOCS / "configs.md").read_text())
    missing = []
    for group, options in config_options().items():
        if group not in sections:
            missing.append(f"a section '## `{group}`' for the group conf/{group}/")
            continue
        missing += [
            f"`{o}` in the section of `{group}`"
            for o in options
            if f"`{o}`" not in sections[group] and f"`{group}={o}`" not in sections[group]
        ]
    assert not missing, "docs/configs.md lacks:\n" + "\n".join(missing)


# Pages being written elsewhere: links to them may dangle until they land.
PENDING_PAGES: set[str] = set()


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target in PENDING_PAGES:
                continue
            if not (page.parent / target).exists():
                broken.append(f"docs/{page.name} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
