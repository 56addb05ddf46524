"""Interlock-free multi-aspect rationalization (Li, Antognini, Faltings, arXiv 2205.06756).

A generator picks, per token, the aspect it is a rationale for (or none); a predictor reads only
the tokens selected for each aspect. ``training.fit`` runs the reconstructed multi-stage method
and the RNP / MTM / A2R baselines from one loop; see ``docs/rationale.md``.
"""
