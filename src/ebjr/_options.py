"""Names of options shared by the library and the command line, importable without numpy.

The command line builds its ``choices`` from here, so ``ebjr --help`` stays
fast and the two never list different values.
"""

from __future__ import annotations

#: losses a guaranteed drop can control (see :mod:`ebjr.calibration.guarantee`)
LOSSES = ("signed", "harm", "disagreement")
#: tests a guaranteed drop can use; the first is the default
P_VALUES = ("exact", "wsr", "hb")
#: the task kinds (see :mod:`ebjr.tasks`); the first is the default
TASKS = ("classification", "regression", "detection")
#: a regression's per-row losses (see :mod:`ebjr.tasks.regression`)
REGRESSION_ERRORS = ("absolute", "squared")
