"""Analysis of a trained model, as functions of (model, data) that know no Trainer.

``nll``: the importance-sampled test NLL of Table 2 and its standard error; ``pendulum``: the
latent-angle metrics of Table 1 (decision 8); ``graph``: graph-based interpolation in the latent
space (sec. 2.3); ``interpolation``: the interpolation analysis of a model written as files
(Figs. 3-8, 17-18); ``figures``: every figure of the repo, drawn from arrays (the callbacks,
reports and entry points call it).
"""
