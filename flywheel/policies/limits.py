"""Numeric limits shared by the torch networks and their NumPy twins (`numpy_forward`).

Kept free of torch so an env worker process can act with a NumPy policy snapshot without
importing torch (about 2 s of its start-up here).
"""

from __future__ import annotations

import math

CLIP = 10.0
"""Normalised values are clipped to [-CLIP, CLIP] against outliers at deployment."""
LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0
"""Bounds of a Gaussian actor's log standard deviation."""
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
"""The constant of a Gaussian log-density, per dimension."""
