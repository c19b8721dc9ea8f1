"""Running a training job, around the Trainer (``vhp_lightning.train`` assembles them).

``preflight``: checks that need no torch, before any work (W&B login, sweep plugins, the run
dir overrides, relative data paths); ``rundir``: the run dir's lock, writable checks, the run's
``.hydra/`` record and its ``train.log``; ``record``: that record read back (the config and the
overrides of a finished run); ``resume``: which checkpoint a run continues and the checks that
it fits; ``interrupts``: a Ctrl-C or SIGTERM during the end-of-run evaluation;
``summary``: the closing report and the messages of a stopped run.
"""
