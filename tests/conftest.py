import os

from hypothesis import settings

import graphopt.testing  # noqa: F401  (registers the graphopt-quick and graphopt-long profiles)

settings.load_profile(os.environ.get("GRAPHOPT_HYPOTHESIS_PROFILE", "graphopt-quick"))
