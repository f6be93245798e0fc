"""The test suite: tests/unit (no pipeline run), tests/integration (pipelines on tiny data), tests/e2e
(the world end to end, arms, several processes). Helpers shared by the tiers live here."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
