#!/usr/bin/env python3
"""Find or build (once) Beam's Prism runner; print its path (see beam_pipeline/prism.py)."""

from __future__ import annotations

import sys

from beam_pipeline.prism import main

if __name__ == "__main__":
    sys.exit(main())
