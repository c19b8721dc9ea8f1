"""Turning files into checked objects: configs and checkpoints.

``config``: the OmegaConf resolvers, torch's thread/denormal settings and early config checks;
``schema``: the typed schema a composed config is validated against; ``instantiate``: building
objects from ``_target_``s on an allow-list only; ``checkpoint``: atomic checkpoint writes and
safe, early-failing loads.
"""
