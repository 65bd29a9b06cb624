"""A module an environment preloads in its fork server (see `EnvironmentSpec.preload`): it remembers
which process imported it, so a step can tell whether it inherited the module or imported it itself."""

import os

IMPORTED_BY = os.getpid()
