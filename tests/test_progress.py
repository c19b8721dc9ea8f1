"""The one-line progress bar (global step, time left, beta, C_t/kappa^2, REWO's phase) and the
short start-up summary of the default callbacks."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from vhp_lightning.callbacks.progress import (
    StepProgress,
    format_clock,
    format_count,
    format_number,
    parameter_summary,
    scheme_text,
)
from vhp_lightning.train import train

# The default callbacks (progress bar on) with the tiny nets; no test pass, 20 steps.
DEFAULT = [
    "callbacks=default",
    "trainer.enable_progress_bar=true",
    "trainer.enable_model_summary=true",
    "test=false",
    "callbacks.progress_bar.refresh_seconds=0",  # look at every step: the test is fast
]


def test_numbers_and_times_are_formatted_for_reading() -> None:
    assert format_count(12340) == "12 340" and format_count(30000) == "30 000"
    assert format_clock(252) == "4:12" and format_clock(3852) == "1:04:12"
    assert format_number(0.031) == "3.1e-2" and format_number(1e-4) == "1.0e-4"
    assert format_number(0.8312) == "0.831" and format_number(12345.0) == "1.2e4"
    # the boundaries, decided on the printed value: never "1.0e-1" or "1e+03"
    assert format_number(0.09996) == "0.1" and format_number(0.0996) == "0.0996"
    assert format_number(0.0949) == "9.5e-2" and format_number(999.7) == "1.0e3"
    assert format_number(-0.09996) == "-0.1" and format_number(999.4) == "999"


def test_scheme_text_shows_what_each_scheme_has() -> None:
    rewo = {"rewo/beta": 0.031, "rewo/c_hat": 3.32e-4, "rewo/kappa_sq": 4e-4}
    initial = scheme_text({**rewo, "rewo/train_prior": torch.tensor(0.0)}, False)
    assert initial == "β 3.1e-2 · Ĉ/κ² 0.83 · initial phase"
    main = scheme_text({**rewo, "rewo/train_prior": 1.0}, had_initial_phase=True)
    assert main == "β 3.1e-2 · Ĉ/κ² 0.83 · main phase"
    # GECO trains the prior from the first step: no phase to show.
    geco = {"geco/beta": 2.5, "geco/c_hat": 8e-4, "geco/kappa_sq": 4e-4, "geco/train_prior": 1.0}
    assert scheme_text(geco, had_initial_phase=False) == "β 2.5 · Ĉ/κ² 2"
    # Warm-up has no bound: C_t alone.
    warmup = {"warmup/beta": 0.5, "warmup/c_hat": 0.12, "warmup/train_prior": 1.0}
    assert scheme_text(warmup, False) == "β 0.5 · Ĉ 0.12"
    assert scheme_text(warmup, False, ascii_only=True) == "beta 0.5 | C_t 0.12"
    assert scheme_text({"train/loss": 3.0}, False) == ""


def test_default_run_prints_the_step_line_in_a_log(compose_cfg, capfd, caplog) -> None:
    caplog.set_level(logging.INFO)
    train(compose_cfg(*DEFAULT, "callbacks.progress_bar.log_every_percent=25", tiny=True))
    out, err = capfd.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("step ")]
    # Not a TTY (captured): one full line per 25% of the 20 steps, then the closing line.
    assert [ln.split(" (")[0] for ln in lines] == [f"step {k}/20" for k in (5, 10, 15, 20, 20)]
    assert re.fullmatch(
        r"step 5/20 \(25%\) · \d+:\d\d left · β 1\.0e-4 · Ĉ/κ² [\d.e-]+ · "
        r"initial phase",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        r"step 20/20 \(100%\) · \d+:\d\d elapsed · β 1\.0e-4 · Ĉ/κ² [\d.e-]+ · "
        r"initial phase",
        lines[-1],
    ), lines[-1]
    assert "\r" not in out and "Epoch" not in out
    # Start-up: one line of parameter counts per part, no Lightning table, no advertisement.
    summary = [
        r.getMessage() for r in caplog.records if r.name == "vhp_lightning.callbacks.progress"
    ]
    assert len(summary) == 1 and re.match(
        r"VHP: [\d.]+ K parameters \(encoder [\d.]+ K, decoder [\d.]+ K, .*prior_encoder",
        summary[0],
    )
    assert "Total FLOPs" not in out + err and "MeanNLL" not in out + err
    assert "Tip:" not in out + err and "TPU available" not in out + err


def test_a_terminal_line_is_redrawn_at_a_bounded_rate(compose_cfg, capfd) -> None:
    train(
        compose_cfg(
            *DEFAULT,
            "callbacks.progress_bar.interactive=true",
            "callbacks.progress_bar.refresh_seconds=3600",  # at most one redraw per hour
            tiny=True,
        )
    )
    out = capfd.readouterr().out
    draws = [d for d in out.split("\r\x1b[K") if d.startswith("step ")]
    # 20 steps: the first step, the end of the validation, the end of training; no more.
    assert 2 <= len(draws) <= 3, draws
    assert draws[0].startswith("step 1/20 (5%) · ")
    assert draws[-1].startswith("step 20/20 (100%) · ") and draws[-1].endswith("initial phase\n")


def test_the_main_phase_is_shown_after_the_switch(compose_cfg, capfd) -> None:
    # kappa = 1: C_t < kappa^2 at once, REWO switches before the bar ever sees the initial phase.
    train(compose_cfg(*DEFAULT, "optim.kappa=1.0", tiny=True))
    last = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("step ")][-1]
    assert last.startswith("step 20/20 (100%)") and last.endswith(" · main phase"), last
    beta = float(re.search(r"β (\S+) ·", last).group(1))
    assert beta > 1e-4  # beta grows in the main phase (eq. 11)


def test_enable_progress_bar_false_removes_the_line(compose_cfg, capfd) -> None:
    train(compose_cfg("callbacks=default", "trainer.max_steps=3", "test=false", tiny=True))
    out = capfd.readouterr().out
    assert "step 3/3" not in out and "step " not in out


def test_epochs_count_when_no_step_budget(compose_cfg, capfd) -> None:
    train(
        compose_cfg(
            *DEFAULT,
            "trainer.max_steps=-1",
            "trainer.max_epochs=2",  # 600 - 200 held out = 400 images / 50 = 8 steps an epoch
            "callbacks.progress_bar.log_every_percent=50",
            tiny=True,
        )
    )
    lines = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" ·")[0] for ln in lines] == [
        "epoch 1/2 (50%)",
        "epoch 2/2 (100%)",
        "epoch 2/2 (100%)",
    ]


def test_the_test_nll_prints_its_progress_in_a_log(compose_cfg, capfd) -> None:
    """Without a terminal the end-of-run test/nll (minutes to hours) prints how many images it
    has scored, of how many, and the time left, at most every ``log_every_seconds`` and only
    when it moved; the images beyond ``test_nll_images`` print nothing."""
    cfg = compose_cfg(
        *DEFAULT[:-2],
        "test=true",
        "trainer.max_steps=2",
        "nll_samples=3",
        "test_nll_images=30",
        "dataset.eval_batch_size=8",
        "callbacks.progress_bar.log_every_seconds=1e-9",  # a line whenever it moved
        tiny=True,
    )
    train(cfg)
    lines = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("test/nll ")]
    assert [ln.split(" (")[0] for ln in lines] == [
        f"test/nll {n}/30 images" for n in (8, 16, 24, 30)
    ], lines
    assert re.fullmatch(
        r"test/nll 8/30 images \(27%\) · \d+:\d\d elapsed · \d+:\d\d left", lines[0]
    )
    assert lines[-1].startswith("test/nll 30/30 images (100%) · ") and lines[-1].endswith(
        "0:00 left"
    )


def test_parameter_summary_counts_each_part() -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Linear(10, 100)  # 1 100
            self.decoder = torch.nn.Linear(100, 10)  # 1 010
            self.act = torch.nn.ReLU()  # no parameters: not listed

    class Module(torch.nn.Module):
        model = Model()

    assert parameter_summary(Module()) == "Model: 2.1 K parameters (encoder 1.1 K, decoder 1.0 K)"


def test_bad_settings_are_explained() -> None:
    with pytest.raises(ValueError, match="log_every_percent <= 100"):
        StepProgress(log_every_percent=0)


def test_the_command_line_prints_the_line_the_pictures_and_the_summary(
    run_cli, tiny_nets, tmp_path
) -> None:
    run = tmp_path / "run"
    proc = run_cli(
        *tiny_nets,
        "trainer.max_steps=10",
        "callbacks.progress_bar.log_every_percent=50",
        "callbacks.progress_bar.refresh_seconds=0",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(
        r"\[vhp_lightning.callbacks.progress\]\[INFO\] - VHP: [\d.]+ K parameters \(encoder", out
    )
    assert re.search(
        r"^step 5/10 \(50%\) · \d+:\d\d left · β 1\.0e-4 · Ĉ/κ² \S+ · initial phase$", out, re.M
    )
    assert re.search(r"^step 10/10 \(100%\) · \d+:\d\d elapsed · β 1\.0e-4 · ", out, re.M)
    summary = out[out.index("Finished at step 10") :]
    assert re.search(r"^test/nll = -?[\d.]+ \(importance-sampled, S = 100\)$", summary, re.M)
    for name in ("latents_step10", "beta_trace", "reconstructions_step10", "samples_step10"):
        assert f"  figure: {run / 'figures' / name}.png" in summary
        assert (run / "figures" / f"{name}.png").is_file()
    assert "Tip:" not in out + proc.stderr and "Total FLOPs" not in out + proc.stderr
