"""Observables computed from predicted tensors: what an experiment measures.

Modules (each imported on its own, so that an optional dependency is only needed by its user):

- :mod:`etgnn.observables.born`: Born charges and eps_inf from a model, symmetrised with phonopy,
  written as a phonopy BORN file (``etgnn export-born``).
- :mod:`etgnn.observables.phonons`: harmonic phonons through phonopy with those tensors: Gamma
  frequencies with LO-TO splitting, mode oscillator strengths (``etgnn phonons``);
  :mod:`etgnn.observables.phonon_bands`: band structures with the NAC and their plots.
"""
