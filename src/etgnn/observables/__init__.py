"""Observables computed from predicted tensors: what an experiment measures.

Modules (each imported on its own, so that an optional dependency is only needed by its user):

- :mod:`etgnn.observables.born`: Born charges and eps_inf from a model, symmetrised with phonopy,
  written as a phonopy BORN file (``etgnn export-born``).
- :mod:`etgnn.observables.phonons`: harmonic phonons through phonopy with those tensors: Gamma
  frequencies with LO-TO splitting, mode oscillator strengths (``etgnn phonons``);
  :mod:`etgnn.observables.phonon_bands`: band structures with the NAC and their plots.
- :mod:`etgnn.observables.spectra`: IR (current and dipole routes) and Raman spectra from time
  series, :mod:`etgnn.observables.timeseries`: streaming predictions along a trajectory
  (``etgnn spectrum ir|raman``).
- :mod:`etgnn.observables.ir`: harmonic IR intensities of molecules (normal modes x APTs, km/mol).
- :mod:`etgnn.observables.harmonic`: harmonic forces from phonopy force constants;
  :mod:`etgnn.observables.field`: MD under an electric field (F = q Z^T E);
  :mod:`etgnn.observables.combined`: one ASE calculator from a force and a dipole calculator.
"""
